"""Input-size rules (keras-free: the CLI checks sizes before TensorFlow loads)."""
from dataclasses import dataclass

from utils.errors import UserError


class InputSizeError(UserError):
    """An --input_height/--input_width that the model's architecture cannot take."""


@dataclass(frozen=True)
class SizeRule:
    """Height and width must each be a multiple of `multiple` and at least `minimum`."""
    multiple: int
    minimum: int = 0

    @property
    def smallest(self):
        return max(self.multiple, -(-self.minimum // self.multiple) * self.multiple)

    def nearest(self, value):
        """The legal sizes just below and above `value` (equal when `value` is legal)."""
        below = max(self.smallest, value // self.multiple * self.multiple)
        above = max(self.smallest, -(-value // self.multiple) * self.multiple)
        return below, above

    def describe(self):
        text = f"height and width multiples of {self.multiple}"
        return text + (f", at least {self.smallest}" if self.smallest > self.multiple else "")

    def check(self, model_name, height, width):
        """Raise InputSizeError naming each illegal flag and its nearest legal sizes."""
        problems = []
        for flag, value in (("--input_height", height), ("--input_width", width)):
            if value < self.smallest or value % self.multiple:
                below, above = self.nearest(value)
                nearest = f"{below}" if below == above else f"{below} or {above}"
                problems.append(f"{flag} {value} (nearest legal: {nearest})")
        if problems:
            raise InputSizeError(f"{model_name} needs {self.describe()}: " + "; ".join(problems))
