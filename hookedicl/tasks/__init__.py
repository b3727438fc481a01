"""In-context learning tasks: function classes, input samplers, OOD shifts, curriculum.

>>> from hookedicl.tasks import make_task
>>> import torch
>>> task = make_task("linear_regression", n_dims=20)
>>> batch = task.sample(batch_size=64, n_points=41, generator=torch.Generator().manual_seed(0))
>>> batch.xs.shape, batch.ys.shape, batch.params["w"].shape
(torch.Size([64, 41, 20]), torch.Size([64, 41]), torch.Size([64, 20]))

Modules: ``batch`` (TaskBatch), ``base`` (Task, FunctionTask), ``samplers`` (x distributions),
``linear``, ``relu_net``, ``decision_tree``, ``sparse_parity``, ``mqar`` (function classes),
``ood`` (distribution-shift wrappers), ``curriculum`` (Curriculum), ``registry`` (make_task).
"""

from .base import FunctionTask, Task
from .batch import TaskBatch
from .curriculum import Curriculum, CurriculumSchedule
from .decision_tree import DecisionTree
from .linear import LinearRegression, NoisyLinearRegression, QuadraticRegression, SparseLinearRegression
from .mqar import VectorMQAR
from .ood import NoisyY, OODWrapper, Orthant, OrthogonalQuery, ScaledX, ScaledY, apply_ood, list_ood
from .registry import list_tasks, make_task
from .relu_net import Relu2NNRegression
from .samplers import (
    GaussianXSampler,
    RademacherXSampler,
    ScaledXSampler,
    SkewedGaussianXSampler,
    UniformXSampler,
    XSampler,
    list_x_samplers,
    make_x_sampler,
)
from .sparse_parity import SparseParity

__all__ = [
    "Curriculum",
    "CurriculumSchedule",
    "DecisionTree",
    "FunctionTask",
    "GaussianXSampler",
    "LinearRegression",
    "NoisyLinearRegression",
    "NoisyY",
    "OODWrapper",
    "Orthant",
    "OrthogonalQuery",
    "QuadraticRegression",
    "RademacherXSampler",
    "Relu2NNRegression",
    "ScaledX",
    "ScaledXSampler",
    "ScaledY",
    "SkewedGaussianXSampler",
    "SparseLinearRegression",
    "SparseParity",
    "Task",
    "TaskBatch",
    "UniformXSampler",
    "VectorMQAR",
    "XSampler",
    "apply_ood",
    "list_ood",
    "list_tasks",
    "list_x_samplers",
    "make_task",
    "make_x_sampler",
]
