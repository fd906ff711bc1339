"""A pipeline's ``masking:`` options: the shortest value a step may bind, detectors on or off."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..credtypes import MIN_MASKABLE
from . import detectors

DEFAULT_MIN_LENGTH = 8  # as GitLab: shorter masked values would hide innocent output
MAX_MIN_LENGTH = 64
MASKING_KEYS = ("min_length", "detectors")


@dataclass(frozen=True)
class MaskingOptions:
    min_length: int = DEFAULT_MIN_LENGTH
    detectors: dict[str, bool] = field(default_factory=dict)  # name → on/off; unnamed are on

    def enabled_detectors(self) -> tuple[detectors.Detector, ...]:
        return detectors.enabled(self.detectors)


def parse_masking(parser, node) -> MaskingOptions:
    """The ``masking:`` mapping, read with the pipeline parser (errors name file and line)."""
    keys = parser.mapping(node, "masking", MASKING_KEYS)
    min_length = DEFAULT_MIN_LENGTH
    if "min_length" in keys:
        vnode = keys["min_length"][1]
        min_length = parser.scalar(vnode, "masking.min_length")
        if (isinstance(min_length, bool) or not isinstance(min_length, int)
                or not MIN_MASKABLE <= min_length <= MAX_MIN_LENGTH):
            parser.fail(f"min_length must be a whole number from {MIN_MASKABLE} to "
                        f"{MAX_MIN_LENGTH}", vnode, "masking.min_length")
    switches: dict[str, bool] = {}
    if "detectors" in keys:
        for name, (_k, vnode) in parser.mapping(keys["detectors"][1], "masking.detectors",
                                                detectors.NAMES).items():
            on = parser.scalar(vnode, f"masking.detectors.{name}")
            if not isinstance(on, bool):
                parser.fail("a detector is switched with true or false", vnode,
                            f"masking.detectors.{name}")
            switches[name] = on
    return MaskingOptions(min_length=min_length, detectors=switches)


def parse_mask_flag(parser, keys: dict, where: str) -> bool:
    """A credential use's ``mask:`` (default true)."""
    if "mask" not in keys:
        return True
    mask = parser.scalar(keys["mask"][1], f"{where}.mask")
    if not isinstance(mask, bool):
        parser.fail("mask must be true or false", keys["mask"][1], f"{where}.mask")
    return mask


def short_bindings(new_env: dict[str, str], new_files: list, secret_values: set[bytes],
                   minimum: int) -> list[str]:
    """Names of the variables just bound to a secret value shorter than ``minimum`` bytes."""
    short = [name for name, value in new_env.items()
             if value.encode("utf-8") in secret_values
             and 0 < len(value.encode("utf-8").rstrip(b"\r\n")) < minimum]
    short += [spec.env for spec in new_files if spec.content in secret_values
              and 0 < len(spec.content.rstrip(b"\r\n")) < minimum]
    return short
