"""What a user of the Habana / MLPerf / upstream recipes brings works as there (issue: fidelity)."""
import os
import pickle
import sys

import numpy as np
import pytest
import torch

from accel import distributed
from detcore.training import checkpoints as checkpoint
from accel.errors import UserError
from detcore.training.report import split_wandb_options
from ssd import SSD300
from ssd import checkpoint as engine
from ssd import train as ssd_train
from yolox.exp import get_exp
from yolox.utils import load_ckpt
from yolox_tools import load_tool

yolox_train = load_tool("train")


def upstream_yolox_checkpoint(path, model, optimizer):
    """The dict upstream / Habana trainers torch.save: best_ap is COCOeval's numpy.float64."""
    torch.save({"start_epoch": 3, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "best_ap": np.float64(0.4321), "curr_ap": np.float64(0.41)}, path)


NEEDS_SAFE_GLOBALS = pytest.mark.skipif(not hasattr(torch.serialization, "safe_globals"),
                                        reason="torch < 2.5 cannot unpickle NumPy scalars weights-only")


@NEEDS_SAFE_GLOBALS
def test_upstream_yolox_checkpoint_loads_weights_only(tmp_path):
    exp = get_exp(exp_name="yolox-nano")
    model = exp.get_model()
    exp.model = model
    opt = exp.get_optimizer(8)
    upstream_yolox_checkpoint(tmp_path / "up.pth", model, opt)
    state = checkpoint.load(tmp_path / "up.pth")
    assert isinstance(state["best_ap"], np.float64) and state["best_ap"] == pytest.approx(0.4321)
    fresh = exp.get_model()
    load_ckpt(fresh, tmp_path / "up.pth")                 # eval / demo / export / -c path
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k])
    # NumPy 1 wrote the scalar constructor under numpy.core: both names are allowed, nothing else
    names = {g[1] for g in checkpoint.numpy_scalar_globals() if isinstance(g, tuple)}
    assert names == {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"}


def test_arbitrary_pickles_are_still_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"model": Evil()}, f, protocol=2)
    with pytest.raises(UserError) as info:
        checkpoint.load(tmp_path / "evil.pth")
    assert "is not a loadable torch checkpoint" in str(info.value) and "posix" in str(info.value)
    assert "weights_only=False" not in str(info.value)


@NEEDS_SAFE_GLOBALS
def test_upstream_checkpoint_resumes_the_trainer(shapes_coco, tmp_path):
    from yolox_tools import SHAPES_EXP, TINY
    argv = ["-f", SHAPES_EXP, "-b", "8", "--data_dir", str(shapes_coco), "--seed", "0", *TINY,
            "max_epoch", "4", "output_dir", str(tmp_path)]
    args = yolox_train.make_parser().parse_args(["--resume", "-c", str(tmp_path / "up.pth"), *argv])
    from yolox.core.cli import build_exp
    exp = build_exp(args)
    model = exp.get_model()
    exp.model = model
    upstream_yolox_checkpoint(tmp_path / "up.pth", model, exp.get_optimizer(8))
    trainer = exp.get_trainer(args)
    trainer.before_train()
    assert (trainer.start_epoch, trainer.start_iter) == (3, 0)
    assert trainer.best_ap == pytest.approx(0.4321)


def reference_ssd_file(path, state, prefix=""):
    """The MLPerf / Habana SSD ``iter_N.pt``: weights + label map, nothing else."""
    torch.save({"model": {prefix + k: v for k, v in state.items()},
                "label_map": {0: "background", 1: "circle", 2: "rectangle", 3: "triangle", 4: "star"}},
               path)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_reference_ssd_checkpoint_starts_at_iteration(tmp_path, prefix):
    src = SSD300(label_num=5)
    reference_ssd_file(tmp_path / "iter_120.pt", src.state_dict(), prefix)
    dst = SSD300(label_num=5)
    opt = torch.optim.SGD(dst.parameters(), lr=0.1, momentum=0.9)
    from accel import Precision
    iteration, state = engine.load_checkpoint(tmp_path / "iter_120.pt", dst, opt, Precision("cpu"), 120)
    assert iteration == 120 and "iteration" not in state
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    assert opt.state_dict()["state"] == {}                # weights only, as the reference


def test_ssd_training_writes_reference_checkpoints(shapes_coco, tmp_path):
    out = tmp_path / "out"
    ssd_train.main(["-d", str(shapes_coco), "-b", "8", "-e", "1", "--val-interval", "1", "-s", "1",
                    "--num-workers", "0", "--output-dir", str(out), "--device", "cpu"])
    iters = torch.load(out / "ssd300_latest.pth", weights_only=True)["iteration"]
    files = sorted(p.name for p in (out / "models").iterdir())
    assert files == [f"iter_{iters}.pt"]                   # one evaluation, after epoch 1
    ref = torch.load(out / "models" / files[0], weights_only=True)
    assert set(ref) == {"model", "label_map"}
    assert ref["label_map"] == {0: "background", 1: "circle", 2: "rectangle", 3: "triangle", 4: "star"}
    assert set(ref["model"]) == set(SSD300(label_num=5).state_dict())
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,loss,lr,AP50,AP50_95,images_per_s,wall_time_s") and len(rows) == 2
    assert (out / "results.png").stat().st_size > 1000
    log = (out / "train_log.txt").read_text()
    assert "the MLPerf log of this run will not be compliant" in log     # no --warmup given


def test_yolox_recipe_flags_parse(monkeypatch):
    parse = yolox_train.make_parser().parse_args
    args = parse(["-n", "yolox-s", "--use_lazy_mode", "False", "--dist-backend", "gloo", "--dist-url",
                  "tcp://10.1.2.3:4567", "--num_machines", "2", "--machine_rank", "1", "-o", "-l",
                  "tensorboard", "steps", "5"])
    assert (args.use_lazy_mode, args.dist_backend, args.num_machines, args.machine_rank, args.occupy) == \
        (False, "gloo", 2, 1, True)
    monkeypatch.delenv("PT_HPU_LAZY_MODE", raising=False)
    yolox_train.check_args(args)
    assert os.environ["PT_HPU_LAZY_MODE"] == "0"          # eager, read by the bridge at import
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        # set, then deleted: monkeypatch then restores the variable's absence after the test (a
        # bare delenv of an absent variable records nothing, and set_rendezvous's values would
        # leak into every later test's subprocesses, srun's ranks included)
        monkeypatch.setenv(var, "unset")
        monkeypatch.delenv(var)
    distributed.set_rendezvous(args.dist_url)
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("10.1.2.3", "4567")
    with pytest.raises(UserError, match="expected tcp://HOST:PORT"):
        distributed.set_rendezvous("10.1.2.3:4567")
    with pytest.raises(UserError, match="needs --dist-url"):
        yolox_train.check_args(parse(["-n", "yolox-s", "--num_machines", "2"]))
    with pytest.raises(UserError, match="--machine_rank 2 must be in"):
        yolox_train.check_args(parse(["-n", "yolox-s", "--num_machines", "2", "--machine_rank", "2",
                                      "--dist-url", "tcp://h:1"]))


def test_wandb_trailing_options_as_upstream(monkeypatch):
    rest, options = split_wandb_options(["max_epoch", "3", "wandb-project", "yolox", "wandb-log_checkpoints",
                                         "5", "steps", "2"])
    assert rest == ["max_epoch", "3", "steps", "2"]
    assert options == {"project": "yolox", "log_checkpoints": 5}
    args = yolox_train.make_parser().parse_args(["-n", "yolox-s", "wandb-project", "p"])
    with pytest.raises(UserError, match="wandb-\\* options need -l wandb"):
        yolox_train.check_args(args)
    monkeypatch.setitem(sys.modules, "wandb", None)
    from detcore.training.report import RunReport
    with pytest.raises(UserError, match="--logger wandb needs the wandb package"):
        RunReport("/tmp", kind="wandb")


def test_multi_machine_launch_command(monkeypatch):
    from accel import distributed as d
    seen = {}
    monkeypatch.setattr(d.os, "execv", lambda exe, cmd: seen.setdefault("cmd", cmd))
    for var in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "23456")
    d.launch_local(4, "train.py", ["-n", "yolox-s"], nnodes=2, node_rank=1)
    assert seen["cmd"][3:8] == ["--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1",
                                "--master_port=23456", "--nproc_per_node=4"]


def test_ssd_reference_flags():
    parse = ssd_train.build_parser().parse_args
    args = parse(["-d", "x", "--num-cropping-iterations", "50", "--no-cuda",
                  "--disable-distributed-validation", "--local_rank", "3", "--det"])
    ssd_train.check_args(args)
    assert (args.num_cropping_iterations, args.device, args.disable_distributed_validation,
            args.local_rank, args.deterministic, args.dl_worker_type) == (50, "cpu", True, 3, True, "MP")
    assert parse(["-d", "x", "--local-rank", "1"]).local_rank == 1
    with pytest.raises(UserError, match="--no-cuda conflicts"):
        ssd_train.check_args(parse(["-d", "x", "--no-cuda", "--device", "cuda"]))


def test_more_cropping_iterations_find_strict_crops_more_often():
    """With one trial a strict IoU choice (0.7, 0.9) mostly fails and another choice is drawn;
    with 50 trials it is usually met, so crops hug the box more closely on average."""
    import random

    from ssd.data import pair_iou, sample_crop
    boxes = np.array([[0.35, 0.35, 0.65, 0.65]])

    def mean_iou(tries):
        rng = random.Random(0)
        wins = [w for w in (sample_crop(rng, boxes, tries) for _ in range(400)) if w is not None]
        return float(np.mean([pair_iou(boxes, w)[0] for w in wins]))

    assert mean_iou(50) > mean_iou(1) + 0.05


def test_pth_to_pickle_verbose_lists_statistics(tmp_path, capsys):
    tool = load_tool("pth_to_pickle")
    torch.save({"w": torch.tensor([[1.0, 3.0]]), "b": torch.tensor([2.0])}, tmp_path / "m.pth")
    tool.main([str(tmp_path / "m.pth"), str(tmp_path / "m.pkl"), "-v"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "name, dtype, mean, std, min, max"
    assert out[1] == "w, float32, (1, 2), 2.0, 1.0, 1.0, 3.0"
    assert out[2] == "b, float32, (1,), 2.0, 0.0, 2.0, 2.0"


def test_backbone_file_of_2017_without_num_batches_tracked_loads(tmp_path):
    from ssd.model import load_backbone_weights
    state = {k: v for k, v in torchvision_resnet34().state_dict().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "resnet34-333f7ec4.pth")
    model = SSD300(label_num=3)
    load_backbone_weights(model, tmp_path / "resnet34-333f7ec4.pth")
    assert torch.equal(model.model.layer1[0].weight, state["conv1.weight"])
    state["head.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(UserError, match="1 unexpected keys, e.g. 'head.extra'"):
        load_backbone_weights(model, tmp_path / "extra.pth")


def test_default_backbone_is_torchvision_imagenet_from_the_cache(imagenet_cache, monkeypatch, tmp_path):
    from ssd.model import imagenet_backbone_state
    state, cache = imagenet_backbone_state()
    assert cache == imagenet_cache and torch.equal(state["conv1.weight"],
                                                   torch.load(imagenet_cache, weights_only=True)["conv1.weight"])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError) as err:
        imagenet_backbone_state()
    msg = str(err.value)
    assert f"put {imagenet_cache.name}" in msg and str(tmp_path / "empty") in msg
    assert "--pretrained-backbone none" in msg and "\n" not in msg


def torchvision_resnet34():
    import torchvision
    torch.manual_seed(3)
    return torchvision.models.resnet34(weights=None)
