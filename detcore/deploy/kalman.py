"""The constant-velocity Kalman filter of box trackers (SORT, DeepSORT, ByteTrack), on numpy.

State: ``(cx, cy, a, h, vcx, vcy, va, vh)``: box centre, aspect ratio ``a = w / h``, height, and
their velocities in units per frame. The box ``(cx, cy, a, h)`` is observed directly. The noise is
set relative to the box height, with ByteTrack's weights (``yolox/tracker/kalman_filter.py``):

- initial std: ``2 * h / 20`` for cx, cy, h; ``1e-2`` for a; ``10 * h / 160`` for vcx, vcy, vh;
  ``1e-5`` for va (velocities start at 0);
- process noise per step: ``h / 20`` for cx, cy, h; ``1e-2`` for a; ``h / 160`` for the velocities
  of cx, cy, h; ``1e-5`` for va (``h`` of the state being predicted from);
- measurement noise: ``h / 20`` for cx, cy, h; ``1e-1`` for a (``h`` of the predicted state).

Every method takes one track (``mean [8]``, ``covariance [8, 8]``, ``measurement [4]``) or a batch
(``[N, 8]``, ``[N, 8, 8]``, ``[N, 4]``, any leading dimensions) and does the arithmetic for the
whole batch at once: there is no per-track loop anywhere. ``multi_predict`` is ``predict`` (the
name ByteTrack gives its vectorised version).
"""
import numpy as np

STD_WEIGHT_POSITION = 1.0 / 20
STD_WEIGHT_VELOCITY = 1.0 / 160


def _diagonal(std):
    """[..., K] standard deviations -> [..., K, K] diagonal covariances."""
    k = std.shape[-1]
    out = np.zeros(std.shape + (k,), dtype=np.float64)
    idx = np.arange(k)
    out[..., idx, idx] = np.square(std)
    return out


def _height_stds(h, weights, constants):
    """Standard deviations ``weights * h`` where ``constants`` is NaN, else the constant, per
    element of the height array ``h [...]`` -> ``[..., K]`` (where-select: no boolean indexing,
    which costs more than the arithmetic at tracking's batch sizes)."""
    return np.where(np.isnan(constants), h[..., None] * weights, constants)


class KalmanFilter:
    """Constant-velocity Kalman filter on ``(cx, cy, a, h)`` boxes, ByteTrack's parameters."""

    ndim = 4

    def __init__(self, dt=1.0, std_weight_position=STD_WEIGHT_POSITION,
                 std_weight_velocity=STD_WEIGHT_VELOCITY):
        n = self.ndim
        self.motion_mat = np.eye(2 * n)
        self.motion_mat[:n, n:] = dt * np.eye(n)
        self.update_mat = np.eye(n, 2 * n)
        wp, wv, nan = std_weight_position, std_weight_velocity, np.nan
        # Per state component: a weight on the height, or (where not NaN) a fixed std.
        self._init_weights = np.array([2 * wp, 2 * wp, 0, 2 * wp, 10 * wv, 10 * wv, 0, 10 * wv])
        self._init_fixed = np.array([nan, nan, 1e-2, nan, nan, nan, 1e-5, nan])
        self._motion_weights = np.array([wp, wp, 0, wp, wv, wv, 0, wv])
        self._motion_fixed = np.array([nan, nan, 1e-2, nan, nan, nan, 1e-5, nan])
        self._measure_weights = np.array([wp, wp, 0, wp])
        self._measure_fixed = np.array([nan, nan, 1e-1, nan])

    def initiate(self, measurement):
        """A new track from an unassociated box ``(cx, cy, a, h)`` ([4] or [..., 4]): mean with zero
        velocities, diagonal covariance."""
        measurement = np.asarray(measurement, dtype=np.float64)
        mean = np.concatenate([measurement, np.zeros_like(measurement)], axis=-1)
        std = _height_stds(measurement[..., 3], self._init_weights, self._init_fixed)
        return mean, _diagonal(std)

    def predict(self, mean, covariance):
        """One step of the motion model: ``x' = F x``, ``P' = F P F^T + Q`` with ``Q`` from the
        height of ``mean`` (before the step)."""
        mean = np.asarray(mean, dtype=np.float64)
        covariance = np.asarray(covariance, dtype=np.float64)
        motion_cov = _diagonal(_height_stds(mean[..., 3], self._motion_weights, self._motion_fixed))
        f = self.motion_mat
        return mean @ f.T, f @ covariance @ f.T + motion_cov

    multi_predict = predict

    def project(self, mean, covariance):
        """The state distribution in measurement space: ``H x`` and ``H P H^T + R``."""
        mean = np.asarray(mean, dtype=np.float64)
        covariance = np.asarray(covariance, dtype=np.float64)
        innovation_cov = _diagonal(_height_stds(mean[..., 3], self._measure_weights,
                                                self._measure_fixed))
        n = self.ndim
        return mean[..., :n], covariance[..., :n, :n] + innovation_cov

    def update(self, mean, covariance, measurement):
        """The correction step with the measured box ``(cx, cy, a, h)``; ``mean`` is the predicted
        state. Gain ``K = P H^T S^-1``; ``x + K (z - H x)``, ``P - K S K^T``."""
        mean = np.asarray(mean, dtype=np.float64)
        covariance = np.asarray(covariance, dtype=np.float64)
        projected_mean, projected_cov = self.project(mean, covariance)
        n = self.ndim
        # S is symmetric, so K^T = S^-1 (P H^T)^T = S^-1 (H P).
        gain = np.swapaxes(np.linalg.solve(projected_cov, covariance[..., :n, :]), -1, -2)
        innovation = np.asarray(measurement, dtype=np.float64) - projected_mean
        new_mean = mean + (gain @ innovation[..., None])[..., 0]
        new_covariance = covariance - gain @ projected_cov @ np.swapaxes(gain, -1, -2)
        return new_mean, new_covariance
