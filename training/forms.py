"""The portal's job form: a license, the purpose it permits, a template, a base that template can
train, and starting settings that learn on a CPU.

The choices come from what the organisation holds (its licenses and their terms' purposes, the
bases it may use); ``clean`` refuses a purpose the chosen license does not permit and a base of
the wrong kind for the template, with the error on the field, before the service's own checks
(which still run, and whose errors land on their fields through ``add_domain_error``).
``static/js/job_form.js`` narrows the base list to the chosen template and swaps in the template's
starting settings while the person has not typed their own; without script every choice is shown
and the server decides.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django import forms

from common.exceptions import Conflict, Invalid
from common.models import Membership
from common.numbers import StrictIntegerField
from training import selectors, services
from training.job_templates import DEFAULT_BASE, QUICK_START, TEMPLATES, quick_start
from training.model_card import PURPOSE_WORDS
from training.models import TEMPLATE_TASK, BaseModel, BaseState, BaseTask, JobTemplate
from training.services.mixed_jobs import MixPart

# Licenses a job form mixes besides the first (the API takes up to 8).
MIX_EXTRA = 2

TASK_GROUPS = {
    BaseTask.CAUSAL_LM: "Causal language models",
    BaseTask.CLASSIFICATION: "Classification encoders",
}


class OptionDataSelect(forms.Select):
    """A select whose options carry ``data-*`` attributes (by option value)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.option_data: dict[str, dict[str, str]] = {}

    def create_option(self, name: str, value: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        option = super().create_option(name, value, *args, **kwargs)
        option["attrs"].update(self.option_data.get(str(value), {}))
        return option


def _template_task(template: str) -> str:
    try:
        return str(TEMPLATE_TASK[JobTemplate(template)])
    except ValueError:
        return ""


# Templates this form cannot submit: they start from a model held in custody and take their own
# fields (generation prompts, a teacher), which the API takes (docs/training.md "Generation",
# docs/api.md "Jobs from a model held in custody"). The form does not offer them.
API_ONLY_TEMPLATES = frozenset(
    {JobTemplate.GENERATE, JobTemplate.DISTILL_CAUSAL_LM, JobTemplate.DISTILL_CLASSIFICATION}
)
FORM_TEMPLATE_CHOICES = [
    (value, label) for value, label in JobTemplate.choices if value not in API_ONLY_TEMPLATES
]


class JobForm(forms.Form):
    grant = forms.ChoiceField(label="License", help_text="The license the job trains under.")
    purpose = forms.ChoiceField(
        label="Purpose",
        help_text="What the trained model is for: one of the purposes the license's terms permit.",
    )
    template = forms.ChoiceField(
        choices=FORM_TEMPLATE_CHOICES,
        initial=JobTemplate.CAUSAL_LM,
        widget=OptionDataSelect,
        help_text=(
            "Synthetic corpus generation has its own form (the generation form linked above); distillation "
            "starts from a model held in custody: submit it through the API (POST /api/v1/training/jobs "
            "with custody_model)."
        ),
    )
    base = forms.ChoiceField(
        label="Base model",
        widget=OptionDataSelect,
        help_text="Only bases the template can train are offered; gpt2-tiny trains in a minute on a CPU.",
    )
    epochs = StrictIntegerField(min_value=1, max_value=100)
    learning_rate = forms.FloatField(min_value=1e-7, max_value=0.5)
    batch_size = StrictIntegerField(min_value=1, max_value=1024)
    max_seq_len = StrictIntegerField(label="Maximum sequence length", min_value=8, max_value=1024)
    seed = StrictIntegerField(min_value=0, max_value=2**32 - 1, initial=0)
    label_field = forms.CharField(
        required=False, help_text="Classification only: the metadata field that holds each record's label."
    )
    dp_enabled = forms.BooleanField(label="Differential privacy (DP-SGD)", required=False)
    target_epsilon = forms.FloatField(label="Target epsilon", required=False, min_value=0.001)
    # A mixed job (issue 17 item 3): up to MIX_EXTRA more licenses, each with a mixing weight; the
    # first license's weight is ``weight``. Left empty, the job trains under the first license alone.
    weight = forms.DecimalField(
        label="Weight of the license",
        required=False,
        min_value=Decimal("0.01"),
        max_digits=8,
        decimal_places=2,
        help_text="Mixing only: this license's share of what the job reads, against the others' weights.",
    )

    FIELD_OF_POINTER = {
        "/grant": "grant",
        "/license": "grant",
        "/template": "template",
        "/base": "base",
        "/label_field": "label_field",
        "/purpose": "purpose",
        "/dp/enabled": "dp_enabled",
        "/dp/target_epsilon": "target_epsilon",
        "/dp/delta": "target_epsilon",
    }

    def __init__(self, *args: Any, membership: Membership, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        organisation = membership.organisation
        # Keyed by public id: the pickers' values are what leaves in the page (issue 13, item 9).
        self.grants = {g.public_id: g for g in selectors.grant_list_for_org(organisation=organisation)}
        bases = selectors.base_list_for_org(organisation=organisation).filter(state=BaseState.VALIDATED)
        self.bases: dict[str, BaseModel] = {b.public_id: b for b in bases}
        self._license_choices()
        self._mix_fields()
        self._template_choices()
        self._base_choices()
        for name, value in quick_start(str(self.fields["template"].initial)).items():
            self.fields[name].initial = value

    def _first_template(self, grant: Any) -> str:
        """The template the form starts on: the first the license permits, a causal one first."""
        permitted = [str(t) for t in (grant.terms.get("job_templates") or []) if t in JobTemplate.values]
        offered = [value for value, _ in FORM_TEMPLATE_CHOICES]
        order = [t for t in offered if t in permitted] or [JobTemplate.CAUSAL_LM.value]
        return order[0]

    def _license_choices(self) -> None:
        grant_field = self.fields["grant"]
        purpose_field = self.fields["purpose"]
        assert isinstance(grant_field, forms.ChoiceField) and isinstance(purpose_field, forms.ChoiceField)
        grant_field.choices = self._grant_choices()
        purposes: list[str] = []
        for grant in self.grants.values():
            purposes += [str(p) for p in grant.terms.get("purposes") or [] if str(p) not in purposes]
        purpose_field.choices = [(p, PURPOSE_WORDS.get(p, p).capitalize()) for p in purposes]
        first = next(iter(self.grants.values()), None)
        if first is not None and first.terms.get("purposes"):
            purpose_field.initial = str(first.terms["purposes"][0])
        assert isinstance(grant_field.widget, forms.Select)
        grant_field.widget.attrs["data-license-purposes"] = json.dumps(
            {key: [str(p) for p in g.terms.get("purposes") or []] for key, g in self.grants.items()}
        )
        grant_field.widget.attrs["data-license-templates"] = json.dumps(
            {key: [str(t) for t in g.terms.get("job_templates") or []] for key, g in self.grants.items()}
        )
        if first is not None:
            self.fields["template"].initial = self._first_template(first)

    def _grant_choices(self) -> list[tuple[str, str]]:
        return [
            (key, f"{g.external_ref or f'License {key}'}: {g.version.dataset.name} v{g.version.number}")
            for key, g in self.grants.items()
        ]

    def _mix_fields(self) -> None:
        """The extra license rows of a mix (``grant_2``/``weight_2``, ...), after the first license."""
        ordinals = {2: "second", 3: "third", 4: "fourth"}
        extra: dict[str, forms.Field] = {}
        for n in range(2, MIX_EXTRA + 2):
            extra[f"grant_{n}"] = forms.ChoiceField(
                label=f"Mix with a {ordinals[n]} license",
                required=False,
                choices=[("", "No other license"), *self._grant_choices()],
                help_text="Optional: train on this license's data too (a mixed job), under all their terms.",
            )
            extra[f"weight_{n}"] = forms.DecimalField(
                label=f"Weight of the {ordinals[n]} license",
                required=False,
                min_value=Decimal("0.01"),
                max_digits=8,
                decimal_places=2,
            )
        # The license rows stand together under the first license: its weight, then the others.
        names = [name for name in self.fields if name != "weight"]
        at = names.index("grant") + 1
        ordered = [*names[:at], "weight", *extra, *names[at:]]
        self.fields.update(extra)
        self.fields = {name: self.fields[name] for name in ordered}

    def license_fields(self) -> list[tuple[str, str]]:
        """(license field, weight field) of each license row, the first license's first."""
        return [("grant", "weight")] + [(f"grant_{n}", f"weight_{n}") for n in range(2, MIX_EXTRA + 2)]

    def mix_parts(self) -> list[MixPart]:
        """The licenses and weights of a mixed job (empty: the job trains under one license)."""
        data = self.cleaned_data
        rows = [(data.get(g), data.get(w)) for g, w in self.license_fields()]
        chosen = [(self.grants[g], w) for g, w in rows if g]
        if len(chosen) < 2:
            return []
        return [MixPart(grant=grant, weight=Decimal(weight or 0)) for grant, weight in chosen]

    def _template_choices(self) -> None:
        widget = self.fields["template"].widget
        assert isinstance(widget, OptionDataSelect)
        widget.option_data = {
            t: {"data-task": _template_task(t), "data-quick-start": json.dumps(QUICK_START.get(t, {}))}
            for t in JobTemplate.values
        }

    def _base_choices(self) -> None:
        base_field = self.fields["base"]
        assert isinstance(base_field, forms.ChoiceField) and isinstance(base_field.widget, OptionDataSelect)
        groups: list[tuple[str, list[tuple[str, str]]]] = []
        for task, title in TASK_GROUPS.items():
            options = [(key, b.name) for key, b in self.bases.items() if b.task == task]
            if options:
                groups.append((title, options))
        base_field.choices = groups
        defaults = {self._default_base(template) for template in JobTemplate.values} - {None}
        base_field.widget.option_data = {
            key: {"data-task": str(b.task), **({"data-default": "true"} if key in defaults else {})}
            for key, b in self.bases.items()
        }
        base_field.initial = self._default_base(str(self.fields["template"].initial))

    def _default_base(self, template: str) -> str | None:
        """The built-in base a template starts from (its public id), when the organisation may use it."""
        name = DEFAULT_BASE.get(template)
        return next((key for key, b in self.bases.items() if b.name == name and b.owner_id is None), None)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        grant = self.grants.get(data.get("grant", ""))
        purpose = data.get("purpose")
        if grant is not None and purpose:
            permitted = [str(p) for p in grant.terms.get("purposes") or []]
            if purpose not in permitted:
                words = ", ".join(PURPOSE_WORDS.get(p, p) for p in permitted) or "none"
                self.add_error(
                    "purpose",
                    f"{grant.external_ref or f'License {grant.public_id}'} does not permit "
                    f"{PURPOSE_WORDS.get(purpose, purpose)}; it permits: {words}.",
                )
        self._clean_mix(data)
        base = self.bases.get(data.get("base", ""))
        template = data.get("template")
        if base is not None and template and base.task != _template_task(template):
            wanted = BaseTask(_template_task(template)).label.lower()
            self.add_error(
                "base",
                f"{base.name} is a {base.get_task_display().lower()}; the "
                f"{JobTemplate(template).label} template trains a {wanted}. Choose one of those.",
            )
        return data

    def _clean_mix(self, data: dict[str, Any]) -> None:
        """Each license of a mix: chosen once, with a weight, permitting the purpose (errors on its row)."""
        rows = self.license_fields()
        chosen = [(g, w) for g, w in rows[1:] if data.get(g)]
        if not chosen:
            return
        seen: set[str] = set()
        purpose = data.get("purpose")
        for grant_name, weight_name in [rows[0], *chosen]:
            key = data.get(grant_name) or ""
            grant = self.grants.get(key)
            if grant is None:
                continue
            label = grant.external_ref or f"License {grant.public_id}"
            if key in seen:
                self.add_error(
                    grant_name, f"{label} is already in this mix: choose another license, or none."
                )
                continue
            seen.add(key)
            if data.get(weight_name) is None and weight_name not in self.errors:
                self.add_error(weight_name, f"Give {label} a weight: a mix reads each license in proportion.")
            permitted = [str(p) for p in grant.terms.get("purposes") or []]
            if purpose and permitted and purpose not in permitted and grant_name != "grant":
                words = ", ".join(PURPOSE_WORDS.get(p, p) for p in permitted)
                self.add_error(
                    grant_name,
                    f"{label} does not permit {PURPOSE_WORDS.get(purpose, purpose)}; it permits: {words}.",
                )

    def job_request(self) -> services.JobRequest:
        data = self.cleaned_data
        hyperparameters = {
            name: data[name]
            for name in ("epochs", "learning_rate", "batch_size", "max_seq_len", "seed")
            # A valuation trains nothing: it takes batch_size, max_seq_len and seed only.
            if name in TEMPLATES[data["template"]].hyperparameters
        }
        dp = {"enabled": True, "target_epsilon": data["target_epsilon"]} if data["dp_enabled"] else None
        return services.JobRequest(
            template=data["template"],
            base=self.bases[data["base"]],
            hyperparameters=hyperparameters,
            dp=dp,
            label_field=data["label_field"],
            purpose=data["purpose"],
        )

    def add_domain_error(self, error: Invalid | Conflict) -> None:
        placed = False
        # The licenses chosen, in the form's order (read before add_error takes fields out of it).
        rows = [(g, w) for g, w in self.license_fields() if self.cleaned_data.get(g)]
        for item in error.errors:
            pointer = item["pointer"]
            name = self._license_field(pointer, rows) or (
                self.FIELD_OF_POINTER.get(pointer) or pointer.removeprefix("/hyperparameters/")
            )
            if name in self.fields:
                self.add_error(name, item["detail"])
                placed = True
        if not placed:
            self.add_error(None, error.detail)

    @staticmethod
    def _license_field(pointer: str, rows: list[tuple[str, str]]) -> str | None:
        """The field of a mixed job's ``/licenses/<i>/...`` pointer: license i's row of ``rows`` (its
        weight for ``/licenses/<i>/weight``)."""
        parts = pointer.split("/")
        if len(parts) < 3 or parts[1] != "licenses" or not parts[2].isdigit():
            return None
        index = int(parts[2])
        if index >= len(rows):
            return None
        return rows[index][1] if parts[3:4] == ["weight"] else rows[index][0]
