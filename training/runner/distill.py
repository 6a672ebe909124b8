"""Distillation: a student learns a teacher's soft labels and the records' hard labels together.

``distill_causal_lm`` trains its student as ``causal_lm`` does and ``distill_classification`` as
``seq_classification`` (DP optional); ``DistillTrainer`` only changes the loss of a step:

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, label)

averaged over the predicted tokens (causal) or the records (classification) of the batch, per
record under DP. The T^2 factor keeps the soft term's gradients at the hard term's scale as T
grows (Hinton et al., 2015). The teacher (a built-in base, or a directory in the working
directory: an uploaded base or a custody model the launcher decrypted there) runs in eval mode
without gradients, on the same device; its logits exist only in this process's memory, and no
event, metric or output file carries them. Validation metrics stay the student's hard-label
loss (and accuracy), so a distilled student and one trained on hard labels alone compare directly.

Under DP the per-record loss (teacher term included) goes through Opacus' ghost clipping: each
record's whole influence on a step is clipped and noised, so the teacher's reading of the records
in this job is covered by the student's epsilon (docs/training.md, "Distillation").
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
from torch import nn

from training.runner.causal_tokenizer import RENAMED
from training.runner.data import InputError
from training.runner.distill_spec import DISTILL_TEMPLATES, DistillSettings
from training.runner.distributed import SINGLE, Rank
from training.runner.models import Base, load_causal, load_classifier
from training.runner.spec import Spec
from training.runner.train import Data, Trainer

IGNORE = -100


def distill_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    per_record: bool = False,
) -> torch.Tensor:
    """The distillation loss of a batch: a scalar, or one value per record with ``per_record``.

    ``student`` and ``teacher`` are logits of the same shape: (batch, length, vocabulary) for a
    causal LM, whose labels (batch, length) are the inputs (the logits at position i predict
    label i + 1, as Hugging Face shifts them; ``-100`` is ignored), or (batch, classes) for a
    classifier with labels (batch,). Both terms are means over the predicted positions.
    """
    causal = student.dim() == 3
    if causal:
        student, teacher, labels = student[:, :-1], teacher[:, :-1], labels[:, 1:]
    else:
        student, teacher, labels = student.unsqueeze(1), teacher.unsqueeze(1), labels.unsqueeze(1)
    student, teacher = student.float(), teacher.float()
    keep = labels != IGNORE
    # KL(p_teacher || p_student) at temperature T, per position: sum_v p_t (log p_t - log p_s).
    log_student_t = torch.log_softmax(student / temperature, dim=-1)
    log_teacher_t = torch.log_softmax(teacher / temperature, dim=-1)
    kl = (log_teacher_t.exp() * (log_teacher_t - log_student_t)).sum(dim=-1)
    ce = nn.functional.cross_entropy(student.transpose(1, 2), labels.masked_fill(~keep, 0), reduction="none")
    per_position = (alpha * temperature**2 * kl + (1 - alpha) * ce) * keep
    if per_record:
        return per_position.sum(dim=1) / keep.sum(dim=1).clamp(min=1)
    return per_position.sum() / keep.sum().clamp(min=1)


def _teacher_spec(spec: Spec, settings: DistillSettings) -> Spec:
    """The spec that loads the teacher with the student's loaders: its base in place of the student's."""
    return dataclasses.replace(
        spec,
        template=DISTILL_TEMPLATES[spec.template],
        base_name=settings.teacher_name,
        base_path=settings.teacher_path,
        tokenizer_path=spec.tokenizer_path if settings.teacher_name is not None else None,
        distill=None,
        dp=None,
    )


def _vocabulary(base: Base) -> dict[str, int]:
    """A tokenizer's token ids, special tokens under their causal names (a built-in causal base's
    artifact renames [SEP] to <|endoftext|> and so on, keeping every id: causal_tokenizer.py)."""
    return {RENAMED.get(token, token): index for token, index in base.tokenizer.get_vocab().items()}


def _predicted_tokens(base: Base) -> int:
    """How many tokens a causal LM's head predicts over (the width of its logits)."""
    head: Any = base.model.get_output_embeddings()
    return int(head.weight.shape[0])


def load_teacher(spec: Spec, student: Base) -> nn.Module:
    """The teacher model, frozen, after checking it speaks the student's vocabulary (or labels).

    A built-in teacher is created from its seeded config (causal) or the bundled encoder with a
    head of the student's labels; the global RNG is restored afterwards, so the student trains
    with the same dropout draws as without a teacher.

    :raises InputError: the teacher cannot be loaded, or its vocabulary or labels differ.
    """
    assert spec.distill is not None
    with torch.random.fork_rng(devices=[]):
        teacher_spec = _teacher_spec(spec, spec.distill)
        try:
            base = load_causal(teacher_spec) if spec.causal else load_classifier(teacher_spec)
        except InputError as error:
            raise InputError("teacher", error.detail) from None
    if spec.causal:
        if _vocabulary(base) != _vocabulary(student):
            raise InputError(
                "teacher",
                "the teacher's tokenizer vocabulary differs from the student's: distill between "
                "models that share a tokenizer",
            )
        teacher_vocabulary = _predicted_tokens(base)
        student_vocabulary = _predicted_tokens(student)
        if teacher_vocabulary != student_vocabulary:
            raise InputError(
                "teacher",
                f"the teacher predicts {teacher_vocabulary} tokens, the student {student_vocabulary}",
            )
    else:
        labels = int(base.model.config.num_labels or 0)
        if labels != len(spec.labels):
            raise InputError(
                "teacher", f"the teacher classifies into {labels} labels, the records have {len(spec.labels)}"
            )
    model = base.model
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


class DistillTrainer(Trainer):
    """The template's trainer with the distillation loss in each step (DP and DDP as the template's)."""

    def __init__(
        self,
        spec: Spec,
        model: nn.Module,
        train: Data,
        validation: Data | None,
        rank: Rank = SINGLE,
        *,
        base: Base,
    ) -> None:
        assert spec.distill is not None
        self.settings = spec.distill
        self.teacher: Any = load_teacher(spec, base).to(train.device)
        accepted = inspect.signature(self.teacher.forward).parameters
        self.teacher_inputs = {"input_ids", "attention_mask", "token_type_ids", "position_ids"} & set(
            accepted
        )
        super().__init__(spec, model, train, validation, rank)

    @torch.no_grad()
    def teacher_logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's logits for a batch: computed here, used in this step's loss, then dropped."""
        with self._autocast():
            output = self.teacher(**{k: v for k, v in inputs.items() if k in self.teacher_inputs})
        return output.logits.float()

    def _loss(
        self, inputs: dict[str, torch.Tensor], labels: torch.Tensor, *, per_record: bool
    ) -> torch.Tensor:
        teacher = self.teacher_logits(inputs)
        with self._autocast():
            student = self.forward(**inputs).logits
        return distill_loss(
            student,
            teacher,
            labels,
            alpha=self.settings.alpha,
            temperature=self.settings.temperature,
            per_record=per_record,
        )

    def _step(self, inputs: dict[str, torch.Tensor], scale: float = 1.0) -> torch.Tensor:
        if self.engine is not None:
            return self._private_step(inputs)
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        loss = self._loss(inputs, labels, per_record=False)
        # scale 0: a DDP rank without a predicted token still joins the gradient all-reduce.
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss * scale if scale != 1.0 else loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def _private_step(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-record distillation losses through Opacus' ghost clipping (two backward passes)."""
        from opacus.utils.fast_gradient_clipping_utils import (  # type: ignore[import-untyped]
            DPTensorFastGradientClipping,
        )

        inputs = dict(inputs)
        labels = inputs.pop("labels")
        per_record = self._loss(inputs, labels, per_record=True)
        loss = DPTensorFastGradientClipping(
            self.criterion.module, self.criterion.optimizer, per_record, self.criterion.loss_reduction
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()
