"""The parts of the model registry (keras-free): CLI options, per-model option values, one entry per model.

A builder is a plain function `builder(n_classes, input_height, input_width,
**options)` in the model's own file. Its `ModelEntry` names it as
"module:function" and imports it on the first `build`, so listing models,
checking options and sizes, and parsing the command line never load keras.
"""
import argparse
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

from Models.size_rules import SizeRule
from utils.cli import str2bool
from utils.errors import UserError


def show(value):
    """A value as the command line spells it (true/false for booleans)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


# === Options ===

@dataclass(frozen=True)
class ModelOption:
    """The CLI flag `--<name>` of an option that some models take; `parse` turns its text into the value."""
    name: str
    parse: Callable[[str], Any]
    help: str


@dataclass(frozen=True)
class Choice:
    """The values one model accepts for one option, and the value used when the option is not given.

    `valid` is a tuple of values, or a checker (value -> bool) that `describe` explains.
    """
    valid: Union[tuple, Callable[[Any], bool]]
    default: Any
    describe: str = ""

    def text(self, mark_default=False):
        if callable(self.valid):
            return self.describe
        return ", ".join(show(v) + (" (default)" if mark_default and self._same(v, self.default) else "")
                         for v in self.valid)

    @staticmethod
    def _same(a, b):
        # 1 == True in Python; an option's values are compared with their type.
        return a == b and isinstance(a, bool) == isinstance(b, bool)

    def canonical(self, value):
        """The valid value equal to `value` (text as the CLI spells it is accepted), else None."""
        if callable(self.valid):
            return value if self.valid(value) else None
        if isinstance(value, str) and all(isinstance(v, bool) for v in self.valid):
            try:
                value = str2bool(value)
            except argparse.ArgumentTypeError:
                return None
        elif isinstance(value, str):
            return next((v for v in self.valid if show(v).lower() == value.strip().lower()), None)
        return next((v for v in self.valid if self._same(v, value)), None)


@dataclass(frozen=True)
class ByOption:
    """A value that depends on one option of the model: `table[options[option]]` (e.g. deeplab_v3+'s
    size rule follows its output stride, pspnet's encoder family its backbone)."""
    option: str
    table: Mapping[Any, Any]

    def pick(self, resolved):
        return self.table[resolved[self.option]]


# === Entries ===

@dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    name: the --model_name. builder: "module:function", imported on first use.
    rule: its input-size rule, a SizeRule or a ByOption of them.
    options: option name -> Choice (valid values and default); the builder takes exactly these
      keyword arguments.
    encoder: the keras.applications family whose layer names and weight shapes the encoder
      reproduces (so its ImageNet weights load by name), a ByOption of them, or None.
    """
    name: str
    builder: str
    rule: Union[SizeRule, ByOption]
    options: Mapping[str, Choice] = field(default_factory=dict)
    encoder: Union[None, str, ByOption] = None

    def resolve(self, options=None):
        """The full option dict (defaults filled) from the user-given `options`; None values count as
        not given. Raises UserError for an option this model does not take or a value it rejects."""
        given = {key: value for key, value in (options or {}).items() if value is not None}
        for key in given:
            if key not in self.options:
                takes = ", ".join(f"--{name}" for name in self.options) or "no options"
                raise UserError(f"--{key} is not an option of --model_name {self.name} (it takes: {takes})")
        resolved = {}
        for key, choice in self.options.items():
            if key not in given:
                resolved[key] = choice.default
                continue
            value = choice.canonical(given[key])
            if value is None:
                raise UserError(f"--{key} {show(given[key])} is not valid for {self.name}; valid: {choice.text()}")
            resolved[key] = value
        return resolved

    def size_rule(self, options=None):
        """The exact input-size rule for these options."""
        if isinstance(self.rule, ByOption):
            return self.rule.pick(self.resolve(options))
        self.resolve(options)  # the options are checked even when the rule does not depend on them
        return self.rule

    def check_size(self, height, width, options=None):
        """Raise InputSizeError (naming the nearest legal sizes) when the model cannot take height x width."""
        self.size_rule(options).check(self.name, height, width)

    def encoder_family(self, options=None):
        """The keras.applications family the encoder matches for these options, or None."""
        if isinstance(self.encoder, ByOption):
            return self.encoder.pick(self.resolve(options))
        return self.encoder

    def load_builder(self):
        """The builder function (imports its module, and so keras, on the first call)."""
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)

    def build(self, n_classes, input_height, input_width, **options):
        """Check the options and the size, then build: a keras.Model from (B, H, W, 3) images to
        (B, H, W, n_classes) float32 softmax probabilities (pspnet with aux_branch: [main, aux])."""
        resolved = self.resolve(options)
        self.check_size(input_height, input_width, resolved)
        return self.load_builder()(n_classes, input_height, input_width, **resolved)
