"""Form fields as every page renders them (templates/includes/field.html).

Each error is tied to its input (aria-describedby, aria-invalid), the help
text too, the label names the input, and what the user typed comes back.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django import forms
from django.conf import settings
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse

Attrs = dict[str, str | None]


class Tags(HTMLParser):
    """The start tags of a fragment: by id, and in order (tag name under ``tag``)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.all: list[Attrs] = []
        self.by_id: dict[str, Attrs] = {}
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found: Attrs = {"tag": tag, **dict(attrs)}
        self.all.append(found)
        if found.get("id"):
            self.by_id[str(found["id"])] = found

    def named(self, name: str) -> list[Attrs]:
        return [t for t in self.all if t.get("name") == name]


class SampleForm(forms.Form):
    title = forms.CharField(max_length=5, help_text="Five characters at most.")
    notes = forms.CharField(widget=forms.Textarea, required=False)
    colour = forms.ChoiceField(choices=[("red", "Red"), ("blue", "Blue")], help_text="Pick one.")
    size = forms.ChoiceField(
        choices=[("s", "Small"), ("l", "Large")], widget=forms.RadioSelect, help_text="How big."
    )
    token = forms.CharField(widget=forms.HiddenInput, min_length=8)


def rendered(data: dict[str, str]) -> tuple[SampleForm, Tags, str]:
    form = SampleForm(data)
    form.is_valid()
    html = render_to_string("includes/fields.html", {"form": form})
    return form, Tags(html), html


def described_by(tag: Attrs) -> list[str]:
    return str(tag.get("aria-describedby") or "").split()


BAD = {"title": "far too long", "notes": "line one\nline <two>", "colour": "blue", "size": "xl", "token": "k"}


class TestAFieldWithAnError:
    def test_the_input_points_at_its_help_and_its_error_and_is_marked_invalid(self):
        _, tags, _ = rendered(BAD)
        title = tags.by_id["id_title"]
        assert title["aria-invalid"] == "true"
        assert described_by(title) == ["id_title_helptext", "id_title_error"]
        assert tags.by_id["id_title_helptext"]["tag"] == "p"
        assert tags.by_id["id_title_error"]["tag"] == "ul"

    def test_the_error_is_in_plain_words_beside_the_field(self):
        _, _, html = rendered(BAD)
        assert re.search(
            r'<ul class="field__errors" id="id_title_error"><li>Ensure this value has at most 5 characters',
            html,
        )

    def test_the_label_names_the_input(self):
        _, tags, _ = rendered(BAD)
        labels = [t for t in tags.all if t["tag"] == "label" and t.get("class") == "field__label"]
        assert {"id_title", "id_notes", "id_colour"} <= {str(t.get("for")) for t in labels}

    def test_what_was_typed_comes_back(self):
        _, tags, html = rendered(BAD)
        assert tags.by_id["id_title"]["value"] == "far too long"
        assert re.search(r'id="id_notes">\r?\nline one\r?\nline &lt;two&gt;</textarea>', html)
        selected = re.search(r'<option value="blue"[^>]*>', html)
        assert selected is not None and "selected" in selected.group(0)

    def test_radio_choices_are_a_fieldset_described_by_help_and_error(self):
        _, tags, html = rendered(BAD)
        fieldset = next(t for t in tags.all if t["tag"] == "fieldset")
        assert described_by(fieldset) == ["id_size_helptext", "id_size_error"]
        assert '<legend class="field__label">Size</legend>' in html
        radios = tags.named("size")
        assert len(radios) == 2
        assert all(r["aria-invalid"] == "true" for r in radios)
        assert "Select a valid choice" in html

    def test_a_hidden_fields_error_is_said_in_plain_words(self):
        _, tags, html = rendered(BAD)
        assert tags.by_id["id_token_error"]["role"] == "alert"
        assert "This form is out of date or incomplete. Reload the page and try again." in html
        assert tags.by_id["id_token"]["value"] == "k"


class TestAFieldWithoutAnError:
    def test_is_not_marked_invalid_and_points_at_its_help_only(self):
        _, tags, _ = rendered(BAD)
        colour = tags.by_id["id_colour"]
        assert "aria-invalid" not in colour
        assert described_by(colour) == ["id_colour_helptext"]
        assert "id_colour_error" not in tags.by_id

    def test_an_unbound_form_marks_nothing(self):
        html = render_to_string("includes/fields.html", {"form": SampleForm()})
        assert "aria-invalid" not in html
        assert "field__errors" not in html


class TestOnARealPage:
    @pytest.mark.django_db
    def test_sign_up_with_differing_passwords_keeps_the_rest_and_marks_the_field(self):
        data = {
            "username": "newcomer",
            "email": "newcomer@example.test",
            "password": "a-long-passphrase-1",
            "password_again": "another-passphrase-2",
            "organisation_name": "Newcomer Data",
            "kind": "trainer",
        }
        response = Client().post(reverse("common:signup"), data)
        assert response.status_code == 200
        html = response.content.decode()
        tags = Tags(html)
        again = tags.by_id["id_password_again"]
        assert again["aria-invalid"] == "true"
        assert described_by(again) == ["id_password_again_error"]
        assert re.search(r'id="id_password_again_error"><li>The two passwords differ\.</li>', html)
        assert tags.by_id["id_username"]["value"] == "newcomer"
        assert tags.by_id["id_email"]["value"] == "newcomer@example.test"
        assert tags.by_id["id_organisation_name"]["value"] == "Newcomer Data"
        trainer = next(t for t in tags.named("kind") if t.get("value") == "trainer")
        assert "checked" in trainer


def test_no_template_renders_form_errors_by_hand():
    """Field errors come from includes/ only, so every form ties them to their inputs the same way."""
    templates = Path(settings.BASE_DIR) / "templates"
    by_hand = [
        f"{path.relative_to(templates)}:{number}"
        for path in sorted(templates.rglob("*.html"))
        if path.parent.name != "includes"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"\.errors\b|errorlist", line)
    ]
    assert by_hand == []
