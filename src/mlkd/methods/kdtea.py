"""KD-TEA [recon] (METHODS.md §2): a large TEA teacher, frozen, distilled into a small TEA student.

Two stages (``KDTEA.stages``): "teacher" trains the repo's TEA (method "tea") with hidden width
``teacher_hidden`` (default 1024); "student" trains this method — the same TEA recipe with hidden width
``hidden`` (default 128) — with the extra term β·MSE(σ(s), σ(t)), s the student's prediction logits and t the
frozen teacher's prediction logits for the same x (MSE instead of KL is the paper's stated point; β = 1).
The student's TEA terms are the teacher's (BCE(s, y), label reconstruction, L2 latent alignment) by default
(``student_loss="tea"``: our reading of "a small TEA student"); ``student_loss="bce"`` is METHODS.md's formula
taken literally, L = BCE(s, y) + β·MSE(σ(s), σ(t)), which leaves the student's label branch untrained (so it
refuses alpha > 0, which would mix that branch's outputs into the targets).
Only the student is the fitted model: the teacher is not part of its state_dict or its saved file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Batch, StepContext, StepOutput, check_choice, check_range, register
from .tea import TEA, TEAConfig


@dataclass
class KDTEAConfig(TEAConfig):
    hidden: int = 128  # the student's width
    teacher_hidden: int = 1024
    beta: float = 1.0  # weight of MSE(σ(student), σ(teacher))
    student_loss: str = "tea"  # "tea": the student's whole TEA loss + β·MSE | "bce": BCE(s, y) + β·MSE only

    def validate(self, n_features: int, n_labels: int) -> None:
        super().validate(n_features, n_labels)
        check_range("teacher_hidden", self.teacher_hidden, 1, 1 << 20)
        check_range("beta", self.beta, 0.0, 1e6)
        check_choice("student_loss", self.student_loss, ("tea", "bce"))

    def validate_new(self, n_features: int, n_labels: int) -> None:
        # "bce" drops the reconstruction term, so the label branch whose σ(t/τ) alpha mixes into the targets
        # never learns: the student's BCE would be against half-random targets, not BCE(s, y)
        if self.student_loss == "bce" and self.alpha > 0:
            raise ValueError(f"parameter 'alpha'={self.alpha!r} mixes the label branch's outputs into the student's "
                             "targets, but student_loss='bce' (L = BCE(s, y) + β·MSE) never trains that branch; "
                             "expected alpha=0 with student_loss='bce', or student_loss='tea'")
        # after the check above: SKDTEA's advice (lambda_rec > 0) does not help a student_loss='bce' student
        super().validate_new(n_features, n_labels)


@register
class KDTEA(TEA):
    name = "kdtea"
    Config = KDTEAConfig
    needs_teacher = True

    @classmethod
    def stages(cls, config: KDTEAConfig) -> list:
        from ..stages import Stage  # the stage runner imports the methods, not the other way round

        tea_fields = {f.name for f in dataclasses.fields(TEAConfig)}
        teacher_params = {k: v for k, v in dataclasses.asdict(config).items() if k in tea_fields}
        teacher_params["hidden"] = config.teacher_hidden
        return [
            Stage("teacher", TEA.name, teacher_params),
            Stage("student", cls.name, dataclasses.asdict(config), teacher="teacher"),
        ]

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        teacher_probs = torch.sigmoid(self.teacher_output(batch.x))
        out = super().step(batch, ctx)
        if self.config.student_loss == "bce":  # METHODS.md's L = BCE(s, y) + β·MSE: no reconstruction, no alignment
            out.losses = {"student": out.losses["student"]}
        out.losses["distillation"] = self.config.beta * F.mse_loss(torch.sigmoid(out.logits), teacher_probs)
        out.extras["teacher_probs"] = teacher_probs
        return out
