"""The dataset kinds every command takes (no heavy imports: the CLI reads them for --help)."""

from hiera_video.errors import HieraVideoError

#: The dataset kinds, for every command: ``ava`` only for finetune and eval (its own module,
#: hiera_video.ava), the others everywhere; each also under the other names in ``KIND_ALIASES``.
DATASET_KINDS = ("k400", "k600", "k700", "ssv2", "list", "folder")
ALL_KINDS = (*DATASET_KINDS, "ava")
KIND_ALIASES = {
    "kinetics400": "k400", "kinetics-400": "k400", "kinetics600": "k600", "kinetics-600": "k600",
    "kinetics700": "k700", "kinetics-700": "k700", "something-something-v2": "ssv2", "sthv2": "ssv2",
}


def dataset_kind(kind: str, kinds: tuple = DATASET_KINDS) -> str:
    """``kind``'s name in ``kinds`` (any case; an alias such as kinetics400 gives k400); refuses another."""
    key = str(kind).strip().lower()
    key = KIND_ALIASES.get(key, key)
    if key not in kinds:
        raise HieraVideoError(f"unknown dataset '{kind}'; use one of {', '.join(kinds)}")
    return key
