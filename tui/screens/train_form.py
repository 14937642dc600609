"""The train screen: a form for a run's config, with memory presets, inline validation, the number
of steps the run will take, and launch (a detached run, then its monitor).

The form starts from the project's resolved defaults (trainer.run_config) and validates through
trainer.config on every change, showing each problem under its field. Launch hands the form's
values to the engine as overrides, exactly as `loradeck train` flags would.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static, TextArea

from trainer import config as train_config
from trainer.config import TrainConfig
from trainer.errors import ConfigError, LoradeckError
from trainer.project import Project, dataset_images
from trainer.repeat_folders import image_repeats, weighted_count

from tui import presets, run_actions
from tui.run_keys import bind
from tui.widgets.vram_estimate import EstimateLine
from tui.worker_errors import ShowsWorkerErrors, show_error


@dataclass(frozen=True)
class Field:
    name: str  # a TrainConfig field ("length" is max_train_steps / max_train_epochs)
    kind: str  # str | int | float | choice | bool | prompts | length
    label: str
    choices: tuple[str, ...] = ()


FIELDS: tuple[Field, ...] = (
    Field("base_model", "str", "Base model"),
    Field("output_name", "str", "Output name"),
    Field("length", "length", "Train for"),
    Field("repeats", "int", "Repeats per epoch"),
    Field("batch_size", "int", "Batch size"),
    Field("gradient_accumulation_steps", "int", "Grad. accumulation"),
    Field("resolution", "int", "Resolution (px)"),
    Field("rank", "int", "LoRA rank"),
    Field("alpha", "float", "LoRA alpha"),
    Field("learning_rate", "float", "Learning rate"),
    Field("lr_scheduler", "choice", "LR schedule", train_config.SCHEDULERS),
    Field("lr_warmup_steps", "int", "Warmup steps"),
    Field("optimizer", "choice", "Optimizer", train_config.OPTIMIZERS),
    Field("mixed_precision", "choice", "Mixed precision", train_config.MIXED_PRECISION),
    Field("attention", "choice", "Attention", train_config.ATTENTION),
    Field("gradient_checkpointing", "bool", "Gradient checkpointing"),
    Field("cache_latents", "bool", "Cache latents"),
    Field("train_text_encoder", "bool", "Train text encoder"),
    Field("sample_prompts", "prompts", "Sample prompts"),
    Field("sample_every_steps", "int", "Sample every N steps"),
    Field("save_every_steps", "int", "Save every N steps"),
    Field("seed", "int", "Seed"),
)
LIMIT_FIELDS = ("max_train_steps", "max_train_epochs")
FORM_KEYS = frozenset(f.name for f in FIELDS) | set(LIMIT_FIELDS)
PRESET_NONE = "custom"


def _field_help(name: str) -> str:
    try:
        from trainer.run_config import FIELD_HELP
    except ImportError:
        return ""
    if name == "length":
        return FIELD_HELP.get("max_train_steps", "") + "; " + FIELD_HELP.get("max_train_epochs", "")
    return FIELD_HELP.get(name, "")


def split_problems(error: ConfigError) -> tuple[dict[str, str], list[str]]:
    """trainer.config's "invalid training config: a: why; b: why" as {form field: why} and the rest."""
    text = str(error)
    prefix = "invalid training config: "
    body = text[len(prefix):] if text.startswith(prefix) else text
    by_field: dict[str, str] = {}
    other: list[str] = []
    for problem in body.split("; "):
        name, sep, why = problem.partition(": ")
        if sep and name in train_config.FIELD_NAMES:
            key = "length" if name in LIMIT_FIELDS else name
            by_field.setdefault(key, why)
        else:
            other.append(problem)
    return by_field, other


def step_summary(cfg: TrainConfig, n_images: int, weighted: int | None = None) -> str:
    """`240 steps: 12 images × 2 repeats ÷ batch 1 = 24 steps/epoch × 10 epochs`. `weighted` counts
    each image as often as its kohya import folder says (trainer.repeat_folders); default n_images."""
    weighted = n_images if weighted is None else weighted
    total = cfg.total_steps(weighted)
    if cfg.max_train_steps:
        return f"{total} steps (fixed); {n_images} images in dataset/"
    if not n_images:
        return "0 steps: dataset/ has no prepared images (run prep first)"
    per_epoch = cfg.steps_per_epoch(weighted)
    images = f"{n_images} images" + (f" ({weighted} with folder repeats)" if weighted != n_images else "")
    return (f"{total} steps: {images} × {cfg.repeats} repeats ÷ batch {cfg.effective_batch()}"
            f" = {per_epoch} steps/epoch × {cfg.max_train_epochs} epochs")


class TrainFormScreen(ShowsWorkerErrors, Screen):
    """Edit a TrainConfig for `project` and launch it as a detached run."""

    DEFAULT_CSS = """
    TrainFormScreen #head { height: auto; padding: 0 1; }
    TrainFormScreen #preset-row { height: 1; padding: 0 1; }
    TrainFormScreen #preset-row Label { width: 24; }
    TrainFormScreen #preset { width: 1fr; }
    TrainFormScreen #steps { height: auto; padding: 0 1; color: $accent; text-style: bold; }
    TrainFormScreen #vram-estimate { height: 1; padding: 0 1; }
    TrainFormScreen #form { height: 1fr; padding: 0 1; }
    TrainFormScreen .row { height: auto; }
    TrainFormScreen .row > Label { width: 24; padding: 0 1 0 0; }
    TrainFormScreen .row > Input { width: 1fr; height: 1; border: none; padding: 0 1; }
    TrainFormScreen .row > Input:focus { background: $boost; }
    TrainFormScreen .row > Input.bad { background: $error 30%; }
    TrainFormScreen .row > Select, TrainFormScreen #preset-row > Select { width: 1fr; height: 1; }
    TrainFormScreen Select > SelectCurrent { border: none; height: 1; padding: 0 1; }
    TrainFormScreen Select:focus > SelectCurrent { border: none; background: $boost; }
    TrainFormScreen .row > #f-length-unit { width: 14; }
    TrainFormScreen .row > Checkbox { border: none; height: 1; padding: 0; width: 1fr; }
    TrainFormScreen .row > TextArea { width: 1fr; height: 3; border: none; }
    TrainFormScreen .field-error { color: $error; padding: 0 0 0 24; height: auto; display: none; }
    TrainFormScreen .field-error.shown { display: block; }
    TrainFormScreen #problems { height: auto; padding: 0 1; color: $error; }
    TrainFormScreen #buttons { height: auto; padding: 0 1; }
    TrainFormScreen #buttons Button { height: 1; border: none; min-width: 16; margin: 0 2 0 0; }
    """

    BINDINGS = [bind("train.launch"), bind("train.preset"), bind("train.runs"), bind("app.back")]

    def __init__(self, project: Project) -> None:
        super().__init__()
        self.project = project
        self.base = TrainConfig()
        self.base_problem: str | None = None
        self.n_images = self.n_weighted = 0
        self.config: TrainConfig | None = None  # the valid config the form shows, else None
        self.errors: dict[str, str] = {}
        self.launched_run: str | None = None
        self.extra: dict[str, Any] = {}  # preset values for knobs the form has no field for
        self._loading = False
        self._validation_queued = False
        self._shown: dict[str, str] = {}  # widget id -> the text it shows

    # -- building -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("", id="head")
        with Horizontal(id="preset-row"):
            yield Label("Memory preset")
            yield Select([(PRESET_NONE, PRESET_NONE)] + [(f"{p.name}: {p.description}", p.name)
                                                         for p in presets.PRESETS],
                         value=PRESET_NONE, allow_blank=False, id="preset")
        yield Static("", id="steps")
        yield EstimateLine(id="vram-estimate")
        with VerticalScroll(id="form"):
            for f in FIELDS:
                with Horizontal(classes="row", id=f"row-{f.name}"):
                    yield Label(f.label)
                    yield from self._widget(f)
                yield Static("", classes="field-error", id=f"err-{f.name}", markup=False)
        yield Static("", id="problems", markup=False)
        with Horizontal(id="buttons"):
            yield Button("Launch run", id="launch", variant="success")
        yield Footer()

    def _widget(self, f: Field):
        tip = _field_help(f.name) or None
        if f.kind == "choice":
            yield Select([(c, c) for c in f.choices], allow_blank=False, id=f"f-{f.name}", tooltip=tip)
        elif f.kind == "bool":
            yield Checkbox(id=f"f-{f.name}", tooltip=tip)
        elif f.kind == "prompts":
            yield TextArea(id=f"f-{f.name}", tooltip="one prompt per line")
        elif f.kind == "length":
            yield Input(id="f-length", tooltip=tip)
            yield Select([("steps", "steps"), ("epochs", "epochs")], allow_blank=False, id="f-length-unit")
        else:
            yield Input(id=f"f-{f.name}", tooltip=tip)

    def on_mount(self) -> None:
        self.title = f"{self.project.name} · train"
        images = dataset_images(self.project)
        self.n_images = len(images)
        self.n_weighted = weighted_count((p.stem for p in images), image_repeats(self.project))
        try:
            from trainer.run_config import resolve

            self.base = resolve(self.project).config
        except ImportError:
            pass
        except LoradeckError as e:
            # A broken project.toml: start from the defaults and say so (launch will refuse too).
            self.base_problem = " ".join(str(e).split())
        self.fill(self.base)
        head = Text(f"New run of {self.project.name}", style="bold")
        head.append(f"  ·  {self.n_images} prepared images", style="dim")
        self.query_one("#head", Static).update(head)
        self.query_one("#f-base_model", Input).focus()

    def fill(self, cfg: TrainConfig) -> None:
        """Show `cfg` in the widgets (no validation runs until all are set)."""
        self._loading = True
        try:
            for f in FIELDS:
                if f.kind == "length":
                    steps = cfg.max_train_steps
                    self.query_one("#f-length", Input).value = str(steps or cfg.max_train_epochs or "")
                    self.query_one("#f-length-unit", Select).value = "steps" if steps else "epochs"
                    continue
                value = getattr(cfg, f.name)
                widget = self.query_one(f"#f-{f.name}")
                if f.kind == "choice":
                    widget.value = value
                elif f.kind == "bool":
                    widget.value = bool(value)
                elif f.kind == "prompts":
                    widget.text = "\n".join(value)
                elif f.kind == "float":
                    widget.value = f"{value:g}"
                else:
                    widget.value = "" if value is None else str(value)
        finally:
            self._loading = False
        self.validate_form()

    # -- reading and validating -----------------------------------------------------------------
    def read_form(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The form as TrainConfig overrides, and the fields whose text is not a value at all."""
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for f in FIELDS:
            if f.kind == "length":
                text = self.query_one("#f-length", Input).value.strip()
                unit = self.query_one("#f-length-unit", Select).value
                key = "max_train_steps" if unit == "steps" else "max_train_epochs"
                try:
                    values[key] = int(text)
                except ValueError:
                    errors["length"] = f"enter a whole number of {unit}"
                continue
            widget = self.query_one(f"#f-{f.name}")
            if f.kind in ("choice", "bool"):
                values[f.name] = widget.value
            elif f.kind == "prompts":
                values[f.name] = [line.strip() for line in widget.text.splitlines() if line.strip()]
            else:
                text = widget.value.strip()
                try:
                    values[f.name] = int(text) if f.kind == "int" else float(text) if f.kind == "float" else text
                except ValueError:
                    errors[f.name] = "enter a whole number" if f.kind == "int" else "enter a number, e.g. 1e-4"
        return values, errors

    def validate_form(self) -> TrainConfig | None:
        """Check the form through trainer.config; show each problem under its field."""
        if self._loading:
            return None
        values, errors = self.read_form()
        other: list[str] = []
        cfg = None
        merged = {**self.extra, **{k: v for k, v in values.items() if k not in errors}}
        # The limit the form names is THE limit: the other one is cleared (as the CLI does).
        for limit in LIMIT_FIELDS:
            if limit not in merged and "length" not in errors:
                merged[limit] = None
        try:
            cfg = train_config.validate(dataclasses.replace(self.base, **merged))
        except ConfigError as e:
            by_field, other = split_problems(e)
            for name, why in by_field.items():
                errors.setdefault(name, why)
        if errors:
            cfg = None
        if cfg is not None and not cfg.max_train_steps and not self.n_images:
            other.append("dataset/ has no prepared images: import and prep images first, or train for a"
                         " fixed number of steps")
        if self.base_problem:
            other.insert(0, self.base_problem)
        self.errors = errors
        for f in FIELDS:
            if self._set(f"err-{f.name}", errors.get(f.name, "")):
                self.query_one(f"#err-{f.name}").set_class(f.name in errors, "shown")
                target = "#f-length" if f.kind == "length" else f"#f-{f.name}"
                self.query_one(target).set_class(f.name in errors, "bad")
        self._set("problems", "\n".join(other))
        if cfg is not None:
            self._set("steps", step_summary(cfg, self.n_images, self.n_weighted))
        else:
            n = len(errors) + len(other)
            self._set("steps", Text(f"{n} problem{'s' if n != 1 else ''} to fix before launch", style="bold red"))
        self.config = cfg if not other else None
        self.query_one(EstimateLine).request(self.config)
        self.query_one("#launch", Button).disabled = self.config is None
        return self.config

    def _set(self, widget_id: str, content: Text | str) -> bool:
        """Update a Static only if its text changes (each update re-lays out the form); True if it did."""
        plain = content.plain if isinstance(content, Text) else content
        if self._shown.get(widget_id) == plain:
            return False
        self._shown[widget_id] = plain
        self.query_one(f"#{widget_id}", Static).update(content)
        return True

    def overrides(self) -> dict[str, Any]:
        """What launch hands the engine: every value on the form (the limit the form names)."""
        values, _ = self.read_form()
        return {**self.extra, **values}

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    @on(TextArea.Changed)
    def _changed(self, event) -> None:
        if getattr(event, "control", None) is not None and event.control.id == "preset":
            return
        # A preset or fill() changes twenty fields at once: validate once after the burst.
        if not self._validation_queued:
            self._validation_queued = True
            self.call_later(self._validate_queued)

    def _validate_queued(self) -> None:
        self._validation_queued = False
        self.validate_form()

    # -- presets -------------------------------------------------------------------------------
    @on(Select.Changed, "#preset")
    def _preset_chosen(self, event: Select.Changed) -> None:
        if event.value != PRESET_NONE and not self._loading:
            self.apply_preset(str(event.value))

    def apply_preset(self, name: str) -> None:
        """Set the preset's knobs on the form; other fields keep what the user typed."""
        values, errors = self.read_form()
        current = {k: v for k, v in values.items() if k not in errors}
        for limit in LIMIT_FIELDS:
            current.setdefault(limit, None)
        preset = presets.get(name)
        self.extra.update({k: v for k, v in preset.overrides.items() if k not in FORM_KEYS})
        cfg = presets.applied(dataclasses.replace(self.base, **self.extra, **current), name)
        if not cfg.max_train_steps and not cfg.max_train_epochs:
            cfg = dataclasses.replace(cfg, max_train_epochs=self.base.max_train_epochs or 10)
        self.fill(cfg)
        select = self.query_one("#preset", Select)
        if select.value != name:
            self._loading = True
            select.value = name
            self._loading = False
        self.notify(f"preset {name}: {preset.description}", timeout=3)

    def action_next_preset(self) -> None:
        names = [p.name for p in presets.PRESETS]
        current = self.query_one("#preset", Select).value
        nxt = names[(names.index(current) + 1) % len(names)] if current in names else names[0]
        self.query_one("#preset", Select).value = nxt  # Select.Changed applies it

    # -- launch --------------------------------------------------------------------------------
    @on(Button.Pressed, "#launch")
    def _launch_pressed(self) -> None:
        self.action_launch()

    def action_launch(self) -> None:
        if self.validate_form() is None:
            self.notify("fix the problems shown before launching", severity="error")
            return
        self.query_one("#launch", Button).disabled = True
        self._set("steps", Text("launching…", style="bold"))
        self._launch(self.overrides())

    @work(thread=True, exclusive=True, group="launch", exit_on_error=False, description="launch run")
    def _launch(self, overrides: dict[str, Any]) -> None:
        try:
            files = run_actions.launch(self.project, overrides)
        except Exception as e:
            self.app.call_from_thread(self._launch_failed, e)
            return
        self.app.call_from_thread(self._launched, files.run_id)

    def _launch_failed(self, error: BaseException) -> None:
        self.validate_form()
        show_error(self, error, "Could not launch the run")

    def _launched(self, run_id: str) -> None:
        from tui.screens.monitor import MonitorScreen

        self.launched_run = run_id
        self.app.switch_screen(MonitorScreen(self.project, run_id))

    def action_runs(self) -> None:
        from tui.screens.runs import RunsScreen

        self.app.push_screen(RunsScreen(self.project))

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()
