"""Curriculum schedules."""

from __future__ import annotations

import pytest
import yaml

from hookedicl.tasks import Curriculum, CurriculumSchedule, make_task


def test_garg_linear_values():
    cur = Curriculum.garg_linear()
    assert cur.at(0) == (5, 11)
    assert cur.at(1999) == (5, 11)
    assert cur.at(2000) == (6, 13)
    assert cur.at(29999) == (19, 39)
    assert cur.at(30000) == (20, 41)
    assert cur.at(500_000) == (20, 41)
    assert cur.final == (20, 41)
    assert cur.steps_to_final() == 30000


def test_garg_mlp_tree_values():
    cur = Curriculum.garg_mlp_tree()
    assert cur.at(0) == (5, 26)
    assert cur.at(2000) == (6, 31)
    assert cur.at(30000) == (20, 101)
    assert cur.steps_to_final() == 30000


def test_uneven_end_is_capped():
    s = CurriculumSchedule(start=1, end=10, inc=4, interval=5)
    assert [s.at(t) for t in (0, 5, 10, 15, 100)] == [1, 5, 9, 10, 10]
    assert s.steps_to_end() == 15


def test_constant():
    cur = Curriculum.constant(8, 17)
    assert cur.at(0) == cur.at(10**6) == (8, 17)
    assert cur.steps_to_final() == 0


def test_from_plain_config_and_round_trip():
    text = """
    dims: {start: 2, end: 5, inc: 1, interval: 100}
    points: {start: 5, end: 11, inc: 2, interval: 100}
    """
    cur = Curriculum.model_validate(yaml.safe_load(text))
    assert cur.at(250) == (4, 9)
    assert Curriculum.model_validate(cur.model_dump()) == cur


@pytest.mark.parametrize(
    "dims, field",
    [
        ({"start": 5, "end": 4, "inc": 1, "interval": 1}, "end"),
        ({"start": 5, "end": 6, "inc": -1, "interval": 1}, "inc"),
        ({"start": 5, "end": 6, "inc": 1, "interval": 0}, "interval"),
        ({"start": 0, "end": 6, "inc": 1, "interval": 1}, "start"),
        ({"start": 5, "end": 6, "inc": 0, "interval": 1}, "inc"),
        ({"start": 5.0, "end": 6, "inc": 1, "interval": 1}, "start"),
        ({"start": "5", "end": 6, "inc": 1, "interval": 1}, "start"),
        ({"start": 5, "end": 6, "inc": 1, "interval": 1, "every": 3}, "every"),
        ({"start": 5, "end": 6, "inc": 1}, "interval"),
    ],
)
def test_invalid_schedules(dims, field):
    with pytest.raises(ValueError, match=field):
        Curriculum.model_validate({"dims": dims, "points": {"start": 1, "end": 1, "inc": 0, "interval": 1}})


def test_extra_top_level_field_forbidden():
    with pytest.raises(ValueError, match="steps"):
        Curriculum.model_validate(
            {
                "dims": {"start": 1, "end": 1, "inc": 0, "interval": 1},
                "points": {"start": 1, "end": 1, "inc": 0, "interval": 1},
                "steps": 3,
            }
        )


@pytest.mark.parametrize("step", [-1, 1.0, "3", None, True])
def test_bad_step(step):
    with pytest.raises(ValueError, match="step"):
        Curriculum.garg_linear().at(step)


def test_curriculum_drives_sampling():
    cur = Curriculum.garg_linear()
    task = make_task("linear_regression", 20)
    for step in (0, 2000, 30000):
        n_dims_active, n_points = cur.at(step)
        batch = task.sample(4, n_points, n_dims_active=n_dims_active)
        assert batch.n_points == n_points
        assert (batch.xs[..., n_dims_active:] == 0).all()
        assert (batch.params["w"][:, n_dims_active:] == 0).all()


def test_check_fits():
    Curriculum.garg_linear().check_fits(20)
    with pytest.raises(ValueError, match="dims.end=20"):
        Curriculum.garg_linear().check_fits(10)
