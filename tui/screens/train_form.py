"""The train screen: a form for a run's config, with memory presets, inline validation, the number
of steps the run will take, and launch (a detached run, then its monitor).

The form starts from the project's resolved defaults (loradeck.trainer.config.resolve) and validates through
loradeck.trainer.config.train_config on every change, showing each problem under its field. Launch hands the form's
values to the engine as overrides, exactly as `loradeck train` flags would.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static, TextArea

from loradeck.trainer.config import presets, train_config
from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.config.resolve import resolve
from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.dataset.project import Project, dataset_images
from loradeck.trainer.dataset.repeat_folders import image_repeats
from loradeck.trainer.errors import ConfigError, LoradeckError
from loradeck.trainer.train import optional_packages, step_count
from loradeck.trainer.train.sample_prompts import suggest
from loradeck.tui import navigation, run_actions, train_form_memory
from loradeck.tui.form_hints import form_hint
from loradeck.tui.keys import bind
from loradeck.tui.train_fields import FIELDS, FORM_KEYS, LIMIT_FIELDS, Field, field_help
from loradeck.tui.widgets.preflight_panel import PreflightPanel
from loradeck.tui.widgets.run_placement import RunPlacement
from loradeck.tui.widgets.tick_box import TickBox
from loradeck.tui.widgets.vram_estimate import EstimateLine
from loradeck.tui.worker_errors import ShowsWorkerErrors, show_error

PRESET_NONE = "custom"


def split_problems(error: ConfigError) -> tuple[dict[str, str], list[str]]:
    """trainer.config.train_config's "invalid training config: a: why; b: why" as {form field: why} and the rest."""
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


def step_summary(cfg: TrainConfig, sizes: dict[str, tuple[int, int]], repeats: dict[str, int] | None = None) -> str:
    """`240 steps: 12 images × 2 repeats ÷ batch 1 = 24 steps/epoch × 10 epochs`, counted by the trainer's
    own formula (loradeck.trainer.train.step_count: per bucket, partial batches) over the images' `sizes`;
    `repeats` are the kohya import folder repeats by stem (loradeck.trainer.dataset.repeat_folders)."""
    count = step_count.count(cfg, sizes, repeats)
    n_images, weighted = count.images, count.weighted_images
    if cfg.max_train_steps:
        return f"{count.total_steps} steps (fixed); {n_images} images in dataset/"
    if not n_images:
        return "0 steps: dataset/ has no prepared images (run prep first)"
    images = f"{n_images} images" + (f" ({weighted} with folder repeats)" if weighted != n_images else "")
    buckets = f" in {count.buckets} buckets" if count.buckets > 1 and cfg.batch_size > 1 else ""
    return (f"{count.total_steps} steps: {images} × {cfg.repeats} repeats ÷ batch {cfg.effective_batch()}{buckets}"
            f" = {count.steps_per_epoch} steps/epoch × {cfg.max_train_epochs} epochs")


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
    TrainFormScreen .row > Checkbox { border: none; height: 1; padding: 0 0 0 1; width: 1fr; }
    TrainFormScreen .row > TextArea { width: 1fr; height: 3; border: none; }
    TrainFormScreen .field-error { color: $error; padding: 0 0 0 24; height: auto; display: none; }
    TrainFormScreen .field-error.shown { display: block; }
    TrainFormScreen #problems { height: auto; padding: 0 1; color: $error; }
    TrainFormScreen #buttons { height: auto; padding: 0 1; }
    TrainFormScreen #buttons Button { height: 1; border: none; min-width: 16; margin: 0 2 0 0; }
    """

    BINDINGS = [bind("train.launch"), bind("train.preset"), bind("train.prompts"), bind("train.runs"),
                bind("train.reprep"), bind("train.defaults"), bind("app.back")]

    def __init__(self, project: Project) -> None:
        super().__init__()
        self.project = project
        self.base = TrainConfig()
        self.base_problem: str | None = None
        self.n_images = 0
        self.sizes: dict[str, tuple[int, int]] = {}  # the dataset's images and their buckets, for the step count
        self.image_repeats: dict[str, int] = {}
        self.config: TrainConfig | None = None  # the valid config the form shows, else None
        self.errors: dict[str, str] = {}
        self.launched_run: str | None = None
        self.extra: dict[str, Any] = {}  # preset values for knobs the form has no field for
        self._loading = False
        self._validation_queued = False
        self._shown: dict[str, str] = {}  # widget id -> the text it shows
        self.prompt_suggestions: list[str] = []  # loradeck.trainer.train.sample_prompts, read after mount
        self.trigger = ""  # the project's trigger word (a preset's sample prompt is made from it)
        self.remembered = False  # the form opened with the values it had at the last launch / close
        self._preset_set_quietly: str | None = None  # a preset name shown without applying it again

    # -- building -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("", id="head")
        with Horizontal(id="preset-row"):
            yield Label("Memory preset")
            yield Select([(PRESET_NONE, PRESET_NONE)] + [(f"{p.name}: {p.description}", p.name)
                                                         for p in presets.PRESETS],
                         value=PRESET_NONE, allow_blank=False, id="preset")
        yield Static("", id="steps")
        yield RunPlacement(id="placement")
        yield EstimateLine(id="vram-estimate")
        with VerticalScroll(id="form"):
            for f in FIELDS:
                with Horizontal(classes="row", id=f"row-{f.name}"):
                    yield Label(f.label)
                    yield from self._widget(f)
                yield Static("", classes="field-error", id=f"err-{f.name}", markup=False)
        yield Static("", id="problems", markup=False)
        yield PreflightPanel(self.project, id="preflight")
        with Horizontal(id="buttons"):
            yield Button("Launch run", id="launch", variant="success")
            # Shown where sbatch exists: the run goes to Slurm with the [slurm] settings (docs/cluster.md).
            yield TickBox("Submit to Slurm", id="slurm", tooltip="submit as a Slurm batch job ([slurm] settings)")
        yield Footer()

    def _widget(self, f: Field):
        tip = field_help(f.name) or None
        if f.kind == "choice":
            yield Select([(c, c) for c in f.choices], allow_blank=False, id=f"f-{f.name}", tooltip=tip)
        elif f.kind == "bool":
            yield TickBox(id=f"f-{f.name}", tooltip=tip)
        elif f.kind == "prompts":
            yield TextArea(id=f"f-{f.name}", tooltip="one prompt per line (f3 jumps here)")
        elif f.kind == "length":
            yield Input(id="f-length", tooltip=tip)
            yield Select([("steps", "steps"), ("epochs", "epochs")], allow_blank=False, id="f-length-unit")
        else:
            yield Input(id=f"f-{f.name}", tooltip=tip)

    def _read_dataset(self) -> None:
        self.n_images = len(dataset_images(self.project))
        self.sizes = step_count.dataset_sizes(self.project)
        self.image_repeats = image_repeats(self.project)

    def on_mount(self) -> None:
        self.title = f"{self.project.name} · train"
        self.query_one("#slurm", Checkbox).display = run_actions.slurm_available()
        self._read_dataset()
        try:
            self.base = resolve(self.project).config
        except LoradeckError as e:
            # A broken project.toml: start from the defaults and say so (launch will refuse too).
            self.base_problem = " ".join(str(e).split())
        self._load_trigger()
        self.query_one("#f-sample_prompts", TextArea).placeholder = (
            f"one prompt per line, e.g. {presets.sample_prompt(self.trigger)} (empty: no samples)")
        self.fill(self.base)
        self.remembered = self._restore_last_values()
        self._show_head()
        self.query_one("#f-base_model", Input).focus()
        self._load_prompt_suggestions()

    def _load_trigger(self) -> None:
        try:
            self.trigger = settings.load(self.project.settings_file).project.trigger_word
        except LoradeckError:
            self.trigger = ""  # base_problem already says what is wrong with project.toml

    def _show_head(self) -> None:
        head = Text(f"New run of {self.project.name}", style="bold")
        head.append(f"  ·  {self.n_images} prepared images", style="dim")
        if self.remembered:
            head.append("  ·  last values (f4: defaults)", style="dim")
        self.query_one("#head", Static).update(head)

    # -- the last values ------------------------------------------------------------------------
    def _restore_last_values(self) -> bool:
        """Show the values the form had when it last launched or closed; False if there are none."""
        values, preset = train_form_memory.load(self.project)
        if not values:
            return False
        self.extra = {k: v for k, v in values.items() if k not in FORM_KEYS}
        try:
            cfg = dataclasses.replace(self.base, **values)
        except TypeError:
            return False
        self.fill(cfg)
        if preset and preset != PRESET_NONE and preset in presets.BY_NAME:
            self._preset_set_quietly = preset  # its values are on the form already: show its name only
            self.query_one("#preset", Select).value = preset
        return True

    def remember_values(self) -> None:
        """Store the form's values for the next time it opens (those that are values at all)."""
        values, errors = self.read_form()
        kept = {k: v for k, v in {**self.extra, **values}.items() if k not in errors}
        try:
            train_form_memory.save(self.project, kept, str(self.query_one("#preset", Select).value))
        except OSError as e:
            self.notify(f"could not remember the form's values: {e}", severity="warning")

    def action_defaults(self) -> None:
        """Back to the project's defaults (project.toml [train]), forgetting the last values shown."""
        self.extra = {}
        self._loading = True
        self.query_one("#preset", Select).value = PRESET_NONE
        self._loading = False
        self.fill(self.base)
        self.remembered = False
        self._show_head()
        self.notify("the project's defaults", timeout=2)

    def action_sample_prompts(self) -> None:
        """F3: to the sample prompts (20 fields down otherwise); an empty field gets the suggestions
        (the trigger word and the dataset's frequent tags; one undoable edit: Ctrl+Z in it undoes)."""
        prompts = self.query_one("#f-sample_prompts", TextArea)
        if not prompts.text.strip() and self.prompt_suggestions:
            prompts.replace("\n".join(self.prompt_suggestions), (0, 0), prompts.document.end)
        prompts.focus()
        prompts.scroll_visible()

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
        """Check the form through loradeck.trainer.config.train_config; show each problem under its field."""
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
        notes = []
        if cfg is not None:  # knobs whose package is missing: refused, or (xformers) replaced
            other += optional_packages.problems_for(cfg)
            notes = optional_packages.warnings_for(cfg)
        if cfg is not None:
            self.query_one(PreflightPanel).check(cfg)  # debounced; runs in a worker
        self.errors = errors
        for f in FIELDS:
            if self._set(f"err-{f.name}", errors.get(f.name, "")):
                self.query_one(f"#err-{f.name}").set_class(f.name in errors, "shown")
                target = "#f-length" if f.kind == "length" else f"#f-{f.name}"
                self.query_one(target).set_class(f.name in errors, "bad")
        self._set("problems", "\n".join(other))
        if cfg is not None:
            summary = step_summary(cfg, self.sizes, self.image_repeats)
            for note in notes:
                summary = Text.assemble(summary, ("\n⚠ " + note, "yellow not bold"))
            self._set("steps", summary)
        else:
            n = len(errors) + len(other)
            self._set("steps", Text(f"{n} problem{'s' if n != 1 else ''} to fix before launch", style="bold red"))
        self.config = cfg if not other else None
        self.query_one(EstimateLine).request(self.config)
        self.query_one("#launch", Button).disabled = self.config is None or self.query_one(PreflightPanel).busy
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
        if event.value == self._preset_set_quietly:
            self._preset_set_quietly = None
            return
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
        cfg = presets.applied(dataclasses.replace(self.base, **self.extra, **current), name, trigger=self.trigger)
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

    # -- sample prompt suggestions (loradeck.trainer.train.sample_prompts) ------------------------------------------
    @work(thread=True, exclusive=True, group="prompt-suggestions", exit_on_error=False,
          description="suggest sample prompts")
    def _load_prompt_suggestions(self) -> None:
        try:
            prompts = suggest(self.project)
        except LoradeckError:  # a broken project.toml: the form's problem line says so; no suggestions
            return
        self.app.call_from_thread(self._show_prompt_suggestions, prompts)

    def _show_prompt_suggestions(self, prompts: list[str]) -> None:
        """Shown in the empty prompts field (its placeholder) and its tooltip: no line of layout added."""
        self.prompt_suggestions = prompts
        if prompts:
            area = self.query_one("#f-sample_prompts", TextArea)
            area.placeholder = "one prompt per line; f3 fills in: " + " · ".join(prompts)
            area.tooltip = "one prompt per line; f3 fills in: " + " · ".join(prompts)

    # -- launch --------------------------------------------------------------------------------
    @on(Button.Pressed, "#launch")
    def _launch_pressed(self) -> None:
        self.action_launch()

    def action_launch(self) -> None:
        if self.query_one(PreflightPanel).busy:
            self.notify("the dataset is being re-prepped: launch when it is done", severity="warning")
            return
        if self.validate_form() is None:
            self.notify("fix the problems shown before launching", severity="error")
            return
        self.query_one("#launch", Button).disabled = True
        self._set("steps", Text("launching…", style="bold"))
        gpu, queue = self.query_one(RunPlacement).choice()
        slurm = self.query_one("#slurm", Checkbox)
        self._launch(self.overrides(), gpu, queue, slurm.display and slurm.value)

    @work(thread=True, exclusive=True, group="launch", exit_on_error=False, description="launch run")
    def _launch(self, overrides: dict[str, Any], gpu: str | None = None, queue: bool = False,
                slurm: bool = False) -> None:
        try:
            resolved = resolve(self.project, overrides)  # once: the run is created from this config
            files = run_actions.launch(self.project, resolved, gpu=gpu, queue=queue, slurm=slurm)
        except Exception as e:
            self.app.call_from_thread(self._launch_failed, e)
            return
        self.app.call_from_thread(self._launched, files.run_id)

    def _launch_failed(self, error: BaseException) -> None:
        self.validate_form()
        if isinstance(error, LoradeckError):
            error.hint = form_hint(error.hint)  # `--optimizer adamw` is the Optimizer field here
        show_error(self, error, "Could not launch the run")

    def _launched(self, run_id: str) -> None:
        self.launched_run = run_id
        self.remember_values()
        self.app.switch_screen(navigation.screen("monitor", self.project, run_id))

    def action_runs(self) -> None:
        self.app.push_screen(navigation.screen("runs", self.project))

    # -- the preflight's re-prep -----------------------------------------------------------------
    @on(Button.Pressed, "#reprep")
    def _reprep_pressed(self) -> None:
        self.action_reprep()

    def action_reprep(self) -> None:
        if not self.query_one(PreflightPanel).reprep():
            self.notify("nothing to re-prep for these settings", timeout=2)
            return
        self.query_one("#launch", Button).disabled = True

    @on(PreflightPanel.Prepped)
    def _reprepped(self, message: PreflightPanel.Prepped) -> None:
        self._read_dataset()
        self._show_head()
        self.validate_form()
        if message.status == "completed":
            self.notify(f"dataset re-prepped: {self.n_images} images", timeout=4)

    def action_back(self) -> None:
        self.remember_values()
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()
