"""What both trainers print and write about their progress: the step clock of the loss lines and
the results.csv row (``detcore.training.progress``, ``detcore.training.report``)."""
import types

from detcore.files import format_row, read_rows, write_rows
from detcore.training.progress import StepClock
from detcore.training.report import epoch_row


def test_step_clock_means_and_eta_over_its_window():
    clock = StepClock()
    assert clock.mean() == (0.0, 0.0) and clock.eta(100) == "0:00:00"
    clock.add(2.0, 0.5)
    clock.add(4.0, 1.5)
    assert clock.mean() == (3.0, 1.0)
    assert clock.eta(1210) == "1:00:30" and clock.eta(-5) == "0:00:00"
    clock.reset()
    clock.add(1.0)
    assert clock.mean() == (1.0, 0.0) and clock.steps == 1


def test_epoch_row_blank_where_not_evaluated_and_pr_from_the_result():
    row = epoch_row(3, {"total_loss": 1.5}, 0.01, None, 12.0, 60.0, None, ("total_loss",), None)
    assert row == {"epoch": 3, "total_loss": 1.5, "lr": 0.01, "AP50": "", "AP50_95": "", "images_per_s": 12.0,
                   "wall_time_s": 60.0, "val/total_loss": "", "P": "", "R": "", "conf": ""}
    classes = types.SimpleNamespace(precision=[0.5, 0.7], recall=[0.2, 0.4], conf=0.31, mean=lambda v: sum(v) / len(v))
    row = epoch_row(4, {"loss": 2.0}, 0.02, (0.3, 0.6), 10, 90, {"loss": 2.5}, ("loss",),
                    types.SimpleNamespace(classes=classes))
    assert (row["AP50_95"], row["AP50"], row["val/loss"]) == (0.3, 0.6, 2.5)
    assert (row["P"], row["R"], row["conf"]) == (0.6, 0.30000000000000004, 0.31)


def test_csv_table_keeps_earlier_epochs_and_adds_late_columns(tmp_path):
    path = tmp_path / "results.csv"
    write_rows(path, [format_row({"epoch": 1, "loss": 1 / 3}), format_row({"epoch": 2, "loss": 0.25, "AP50": 0.5})])
    assert path.read_text().splitlines() == ["epoch,loss,AP50", "1,0.333333,", "2,0.25,0.5"]
    assert [r["epoch"] for r in read_rows(path, before_epoch=2)] == ["1"]     # a resume redoing epoch 2
    assert read_rows(tmp_path / "none.csv") == [] and len(read_rows(path)) == 2
