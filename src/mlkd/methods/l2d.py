"""Teacher → student multi-label KD: L2D [code] and its baselines (METHODS.md §3), as one ``distill`` family.

Registered methods:

* ``labelwise`` — a backbone with a label-wise embedding head (``mlkd.backbones``) trained with BCE: the
  teacher, and the "student alone" baseline.
* ``distill`` — a ``labelwise`` student trained against a frozen teacher:
  BCE(s, y) + λ_logits·LOGIT(s, t) + λ_feature·FEATURE, with
  ``logit_loss`` ∈ {none, kd, mse, mld} (``kd`` = T²·binKL_T, ``mld`` = L2D's binKL_1) and
  ``feature_loss`` ∈ {none, led, rkd, pkt} (``led`` = λ_cd·CD + λ_id·ID on label-wise embeddings — L2D's
  "LE" term, so λ_feature is L2D's λ_le; ``rkd``/``pkt`` on pooled features).
  L2D = ``logit_loss="mld", feature_loss="led"`` (the default); the ablation is MLD only
  (``feature_loss="none"``), MLD+CD (``lambda_id=0``), MLD+ID (``lambda_cd=0``), MLD+LED.
  Two stages (``Distill.stages``): "teacher" trains ``labelwise`` at the teacher's size — or, with
  ``teacher_dir``, loads a model saved by ``MultiLabelClassifier.save`` (method ``pretrained``, not trained) —
  then "student" trains this method with the teacher attached frozen (eval mode, no grad, not saved).
* ``pretrained`` — a saved model directory wrapped as a method (inputs mapped into its own feature scale).

Official weights (configs/coco/resnet101_to_resnet34_l2d.py): λ_logits = 10, λ_le = 1, λ_cd = 100,
λ_id = 1000, relative to a BCE *summed* over batch and labels — hence ``bce_reduction="sum"`` by default;
with AdamW the overall scale of the loss does not matter, only these ratios.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import losses
from ..backbones import DEFAULT_SIZES, ModelOutput, build_backbone, parse_image_shape
from ..nn import ACTIVATIONS
from .base import (
    MIN_TEMPERATURE,
    Batch,
    Method,
    MethodConfig,
    StepContext,
    StepOutput,
    check_choice,
    check_range,
    register,
)

LOGIT_LOSSES = ("none", "kd", "mse", "mld")
POOLED_FEATURE_LOSSES = ("rkd", "pkt")  # on pooled features (the feature-KD slot beside LED takes these)
FEATURE_LOSSES = ("none", "led", *POOLED_FEATURE_LOSSES)
BACKBONES = ("mlp", "cnn")


@dataclass
class LabelwiseConfig(MethodConfig):
    backbone: str = "mlp"  # "mlp" (tabular rows) | "cnn" (images as flattened rows, see image_shape)
    hidden: int | None = None  # MLP width | CNN base width (stages w, 2w, 4w); None: 128 | 16
    depth: int | None = None  # MLP hidden layers | CNN basic blocks per stage; None: 2 | 1
    embed_dim: int = 32  # e, the size of each label-wise embedding
    dropout: float = 0.1
    activation: str = "leaky_relu"  # MLP only
    image_shape: str = "auto"  # CNN only: "C,H,W", or "auto" = one square channel
    bce_reduction: str = "sum"  # "sum" over batch and labels (official L2D) | "mean"

    def sizes(self, role: str = "student") -> tuple[int, int]:
        """(hidden, depth) with None replaced by the backbone's default for ``role``."""
        hidden, depth = DEFAULT_SIZES[self.backbone][role]
        return (hidden if self.hidden is None else self.hidden), (depth if self.depth is None else self.depth)

    def validate(self, n_features: int, n_labels: int) -> None:
        check_choice("backbone", self.backbone, BACKBONES)
        check_range("hidden", self.hidden, 1, 1 << 20)
        check_range("depth", self.depth, 0 if self.backbone == "mlp" else 1, 64)
        check_range("embed_dim", self.embed_dim, 1, 1 << 16)
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_choice("bce_reduction", self.bce_reduction, ("sum", "mean"))
        if self.backbone == "cnn":
            parse_image_shape(self.image_shape, n_features)

    def validate_new(self, n_features: int, n_labels: int) -> None:
        # a parameter of a backbone no stage builds is a mistake (image_shape without backbone='cnn' would train
        # an MLP the user did not ask for), not something to ignore; models saved before this check still load
        in_use = self.backbones_in_use()
        if "mlp" not in in_use and self.activation != "leaky_relu":
            raise ValueError(f"parameter 'activation'={self.activation!r} applies to backbone='mlp' only (the CNN "
                             "uses ReLU); expected it unset with backbone='cnn'")
        if "cnn" not in in_use and self.image_shape != "auto":
            raise ValueError(f"parameter 'image_shape'={self.image_shape!r} applies to backbone='cnn' only; expected "
                             "backbone='cnn' with it, or no image_shape for the MLP")

    def backbones_in_use(self) -> set[str]:
        """The backbones this configuration builds."""
        return {self.backbone}


def bce_loss(logits: Tensor, targets: Tensor, reduction: str) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, targets, reduction=reduction)


@register
class Labelwise(Method):
    """A backbone with a label-wise embedding head, trained with BCE on the hard labels."""

    name = "labelwise"
    Config = LabelwiseConfig

    def __init__(self, n_features: int, n_labels: int, config: LabelwiseConfig) -> None:
        super().__init__(n_features, n_labels, config)
        c = config
        hidden, depth = c.sizes()
        self.backbone = build_backbone(
            c.backbone, n_features, n_labels, hidden=hidden, depth=depth, embed_dim=c.embed_dim,
            activation=c.activation, dropout=c.dropout, image_shape=c.image_shape,
        )

    def outputs(self, x: Tensor) -> ModelOutput:
        """Logits, label-wise embeddings, pooled and intermediate features for x (n, n_features)."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x).logits

    def batch_coupling(self) -> str | None:
        if "cnn" in self.config.backbones_in_use():
            return "the CNN's batch normalisation normalises each channel over the batch's rows"
        return None

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        out = self.backbone(batch.x)
        return StepOutput({"bce": bce_loss(out.logits, batch.y, self.config.bce_reduction)}, out.logits)


# ---------------------------------------------------------------------------------------------------
# distill
# ---------------------------------------------------------------------------------------------------
#: The parameters of the teacher that ``distill`` trains itself (none applies to a ``teacher_dir``).
TEACHER_SETTINGS = ("teacher_backbone", "teacher_hidden", "teacher_depth", "teacher_embed_dim", "teacher_max_epochs",
                    "teacher_lr")


@dataclass
class DistillConfig(LabelwiseConfig):
    # the teacher (None: the student's backbone / embed_dim, the backbone's teacher size)
    teacher_backbone: str | None = None
    teacher_hidden: int | None = None
    teacher_depth: int | None = None
    teacher_embed_dim: int | None = None
    teacher_max_epochs: int | None = None  # training overrides of the teacher stage (None: as the student)
    teacher_lr: float | None = None
    teacher_dir: str | None = None  # a model directory saved by MultiLabelClassifier.save: loaded, not trained
    # the distillation terms
    logit_loss: str = "mld"  # none | kd (T²·binKL_T) | mse (logits) | mld (binKL_1)
    feature_loss: str = "led"  # none | led (label-wise embeddings) | rkd | pkt (pooled features)
    lambda_logits: float = 10.0
    lambda_feature: float = 1.0  # L2D's λ_le when feature_loss="led"
    lambda_cd: float = 100.0
    lambda_id: float = 1000.0
    T: float = 4.0  # temperature of logit_loss="kd" (MLD is T = 1)
    t2_scaling: bool = True  # logit_loss="kd": × T², Hinton's KD (the published cells); False: binKL_T as METHODS.md
    # METHODS.md §3's optional feature-KD slot: RKD or PKT on pooled features added to feature_loss (e.g. LED)
    extra_feature_loss: str = "none"  # none | rkd | pkt
    lambda_extra: float = 1.0

    def inert_params(self) -> set[str]:
        inert = {"lambda_extra"} if self.extra_feature_loss == "none" else set()
        return inert | ({"t2_scaling"} if self.logit_loss != "kd" else set())

    def teacher_params(self) -> dict:
        """The ``labelwise`` parameters of the teacher stage (every size resolved)."""
        backbone = self.teacher_backbone or self.backbone
        hidden, depth = DEFAULT_SIZES[backbone]["teacher"]
        return {
            "backbone": backbone,
            "hidden": hidden if self.teacher_hidden is None else self.teacher_hidden,
            "depth": depth if self.teacher_depth is None else self.teacher_depth,
            "embed_dim": self.embed_dim if self.teacher_embed_dim is None else self.teacher_embed_dim,
            "dropout": self.dropout,
            "activation": self.activation,
            "image_shape": self.image_shape,
            "bce_reduction": self.bce_reduction,
        }

    def validate(self, n_features: int, n_labels: int) -> None:
        super().validate(n_features, n_labels)
        check_choice("logit_loss", self.logit_loss, LOGIT_LOSSES)
        check_choice("feature_loss", self.feature_loss, FEATURE_LOSSES)
        check_choice("extra_feature_loss", self.extra_feature_loss, ("none", *POOLED_FEATURE_LOSSES))
        if self.extra_feature_loss != "none" and self.extra_feature_loss == self.feature_loss:
            raise ValueError(f"parameter 'extra_feature_loss'={self.extra_feature_loss!r} repeats feature_loss; "
                             "expected another pooled-feature loss or 'none' (raise lambda_feature instead)")
        for name in ("lambda_logits", "lambda_feature", "lambda_cd", "lambda_id", "lambda_extra"):
            check_range(name, getattr(self, name), 0.0, 1e9)
        check_range("T", self.T, 0.0, 1e3, low_open=True)
        check_range("teacher_max_epochs", self.teacher_max_epochs, 1, 1 << 30)
        check_range("teacher_lr", self.teacher_lr, 0.0, 10.0, low_open=True, high_open=True)
        if self.teacher_dir is not None and not str(self.teacher_dir).strip():
            raise ValueError("parameter 'teacher_dir'='' is invalid; expected a model directory or None")
        if self.teacher_dir is None:
            if self.teacher_backbone is not None:
                check_choice("teacher_backbone", self.teacher_backbone, BACKBONES)
            # the teacher's own sizes under their own names (the check of the teacher's config below names
            # 'hidden', the student's parameter, which the user may not have set)
            check_range("teacher_hidden", self.teacher_hidden, 1, 1 << 20)
            check_range("teacher_depth", self.teacher_depth, 0 if (self.teacher_backbone or self.backbone) == "mlp"
                        else 1, 64)
            check_range("teacher_embed_dim", self.teacher_embed_dim, 1, 1 << 16)
            LabelwiseConfig(**self.teacher_params()).validate(n_features, n_labels)

    def validate_new(self, n_features: int, n_labels: int) -> None:
        super().validate_new(n_features, n_labels)
        # new fits only (MIN_TEMPERATURE): a model an earlier mlkd saved with a smaller T > 0 still loads
        check_range("T", self.T, MIN_TEMPERATURE, 1e3)
        # a saved teacher is loaded as it is, not built or trained: a teacher setting beside it would be ignored
        if self.teacher_dir is not None:
            for name in TEACHER_SETTINGS:
                if getattr(self, name) is not None:
                    raise ValueError(f"parameter {name!r}={getattr(self, name)!r} applies to a teacher mlkd trains, "
                                     f"but teacher_dir loads a saved one as it is; expected {name} unset (None) with "
                                     "teacher_dir, or no teacher_dir")

    def backbones_in_use(self) -> set[str]:
        if self.teacher_dir is not None:  # a saved teacher is loaded as it is
            return {self.backbone}
        return {self.backbone, self.teacher_backbone or self.backbone}


@register
class Distill(Labelwise):
    """A label-wise student distilled from a frozen teacher (L2D and the KD baselines; see module doc)."""

    name = "distill"
    Config = DistillConfig
    needs_teacher = True

    @classmethod
    def stages(cls, config: DistillConfig) -> list:
        from ..stages import Stage  # the stage runner imports the methods, not the other way round

        if config.teacher_dir is not None:
            teacher = Stage(
                "teacher", Pretrained.name,
                {"model_dir": str(config.teacher_dir),
                 "need_embeddings": (config.feature_loss, config.extra_feature_loss) != ("none", "none")},
                fit=False,
            )
        else:
            train = {k: v for k, v in (("max_epochs", config.teacher_max_epochs), ("lr", config.teacher_lr))
                     if v is not None}
            teacher = Stage("teacher", Labelwise.name, config.teacher_params(), train=train)
        return [teacher, Stage("student", cls.name, dataclasses.asdict(config), teacher="teacher")]

    @classmethod
    def teacher_problem(cls, config: DistillConfig, teacher: type[Method], teacher_config) -> str | None:
        if hasattr(teacher, "outputs"):  # 'labelwise', 'distill', 'pretrained' (which checks its saved model)
            return None
        for param in ("feature_loss", "extra_feature_loss"):
            name = getattr(config, param)
            if name == "led":
                return ("feature_loss='led' needs a teacher with label-wise embeddings; expected a 'labelwise' or "
                        "'distill' teacher, or feature_loss='none'")
            if name in POOLED_FEATURE_LOSSES:
                return (f"{param}={name!r} needs a teacher with pooled features; expected a 'labelwise' or "
                        f"'distill' teacher, or {param}='none'")
        return None

    def teacher_outputs(self, x: Tensor) -> ModelOutput:
        """The frozen teacher's ``ModelOutput`` for x, under no_grad (its logits alone for a teacher without
        label-wise outputs, e.g. a plain 'bce' model: enough for the logit losses)."""
        if self.teacher is None:
            self.teacher_output(x)  # raises the base class's "needs a trained teacher" error
        with torch.no_grad():
            if not hasattr(self.teacher, "outputs"):
                return ModelOutput(self.teacher(x))
            return self.teacher.outputs(x)

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        c = self.config
        out = self.backbone(batch.x)
        terms = {"bce": bce_loss(out.logits, batch.y, c.bce_reduction)}
        if c.logit_loss == "none" and c.feature_loss == "none" and c.extra_feature_loss == "none":
            return StepOutput(terms, out.logits)
        teacher = self.teacher_outputs(batch.x)
        if c.logit_loss == "mld":
            terms["mld"] = c.lambda_logits * losses.mld(out.logits, teacher.logits)
        elif c.logit_loss == "kd":
            kd = losses.binary_kd if c.t2_scaling else losses.mld  # T²·binKL_T, or binKL_T alone
            terms["kd"] = c.lambda_logits * kd(out.logits, teacher.logits, c.T)
        elif c.logit_loss == "mse":
            terms["mse"] = c.lambda_logits * losses.mse_logits(out.logits, teacher.logits)
        if c.feature_loss == "led":
            if teacher.label_embeddings is None:
                raise ValueError("feature_loss='led' needs a teacher with label-wise embeddings; expected a "
                                 "'labelwise' or 'distill' teacher, or feature_loss='none'")
            if c.lambda_cd:
                terms["cd"] = c.lambda_feature * c.lambda_cd * losses.cd_loss(
                    out.label_embeddings, teacher.label_embeddings, batch.y)
            if c.lambda_id:
                terms["id"] = c.lambda_feature * c.lambda_id * losses.id_loss(
                    out.label_embeddings, teacher.label_embeddings, batch.y)
        elif c.feature_loss in POOLED_FEATURE_LOSSES:
            terms[c.feature_loss] = c.lambda_feature * _pooled_feature_loss("feature_loss", c.feature_loss, out,
                                                                             teacher)
        if c.extra_feature_loss != "none":  # the optional feature-KD slot, beside LED
            terms[f"{c.extra_feature_loss}_extra"] = c.lambda_extra * _pooled_feature_loss(
                "extra_feature_loss", c.extra_feature_loss, out, teacher)
        return StepOutput(terms, out.logits, {"teacher_logits": teacher.logits})


def _pooled_feature_loss(param: str, name: str, student: ModelOutput, teacher: ModelOutput) -> Tensor:
    """RKD or PKT between the student's and the teacher's pooled features."""
    if teacher.features is None:
        raise ValueError(f"{param}={name!r} needs a teacher with pooled features; expected a 'labelwise' or "
                         f"'distill' teacher, or {param}='none'")
    return (losses.rkd if name == "rkd" else losses.pkt)(student.features, teacher.features)


# ---------------------------------------------------------------------------------------------------
# pretrained: a saved model directory as a method
# ---------------------------------------------------------------------------------------------------
@dataclass
class PretrainedConfig(MethodConfig):
    model_dir: str | None = None  # a directory written by MultiLabelClassifier.save / mlkd fit
    need_embeddings: bool = False  # require a model that returns label-wise embeddings ('labelwise', 'distill')

    def validate(self, n_features: int, n_labels: int) -> None:
        from ..io import read_config
        from .base import method_class

        if not self.model_dir:
            raise ValueError("parameter 'model_dir' is missing; expected a model directory saved by mlkd")
        saved = read_config(self.model_dir)
        shape = (saved.get("n_features"), saved.get("n_labels"))
        if shape != (n_features, n_labels):
            raise ValueError(
                f"model {self.model_dir} has {shape[0]} features and {shape[1]} labels; expected {n_features} "
                f"and {n_labels} like the training data"
            )
        method = method_class(str(saved.get("method")))
        if self.need_embeddings and not hasattr(method, "outputs"):
            raise ValueError(
                f"model {self.model_dir} (method {method.name!r}) has no label-wise embeddings; expected a "
                "'labelwise' or 'distill' model, or a student with feature_loss='none'"
            )


@register
class Pretrained(Method):
    """A saved model, loaded with its own feature scaling; fine-tuned with BCE if trained (as a teacher it
    is frozen and not trained at all).

    Its inputs are taken to be raw features, or — once ``bind_input_scaler`` has been told the scaler
    that produced them — features standardised by that scaler; both are mapped into the saved model's
    own scale by one affine map (buffers, saved with the model).
    """

    name = "pretrained"
    Config = PretrainedConfig

    def __init__(self, n_features: int, n_labels: int, config: PretrainedConfig, inner: dict | None = None) -> None:
        """``inner`` (``load_model`` of a saved fine-tuned model): the wrapped model's method and parameters as
        ``inner_spec`` recorded them, so it is rebuilt without reading ``model_dir`` (its weights and the
        input map are in the saved state); without it, ``model_dir`` is loaded."""
        super().__init__(n_features, n_labels, config)
        if inner is not None:
            from .base import rebuild_saved

            self.model = rebuild_saved(inner["method"], n_features, n_labels, inner["method_params"],
                                       inner.get("inner"))  # a fine-tuned fine-tuned model has one too
            self._saved_mean, self._saved_scale = np.zeros(n_features), np.ones(n_features)
        else:
            from ..io import load_model

            saved = load_model(config.model_dir)
            self.model = saved.model_
            self._saved_mean = np.asarray(saved.scaler_.mean, dtype=np.float64)
            self._saved_scale = np.asarray(saved.scaler_.scale, dtype=np.float64)
            inner = {"method": saved.method, "method_params": saved.method_params(),
                     "inner": getattr(saved.model_, "inner_spec", None)}
        self.inner_spec = inner  # saved with a fine-tuned model: it then loads without model_dir
        self.register_buffer("input_scale", torch.zeros(n_features))
        self.register_buffer("input_shift", torch.zeros(n_features))
        self.bind_input_scaler(None)

    def bind_input_scaler(self, scaler) -> None:
        mean = np.zeros_like(self._saved_mean) if scaler is None else np.asarray(scaler.mean, dtype=np.float64)
        scale = np.ones_like(self._saved_scale) if scaler is None else np.asarray(scaler.scale, dtype=np.float64)
        # x_raw = x·scale + mean, and the saved model reads (x_raw − saved_mean) / saved_scale
        self.input_scale.copy_(torch.as_tensor(scale / self._saved_scale))
        self.input_shift.copy_(torch.as_tensor((mean - self._saved_mean) / self._saved_scale))

    def _inputs(self, x: Tensor) -> Tensor:
        return x * self.input_scale + self.input_shift

    def outputs(self, x: Tensor) -> ModelOutput:
        x = self._inputs(x)
        if hasattr(self.model, "outputs"):
            return self.model.outputs(x)
        return ModelOutput(self.model(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self._inputs(x))

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        logits = self.forward(batch.x)
        return StepOutput({"bce": F.binary_cross_entropy_with_logits(logits, batch.y)}, logits)
