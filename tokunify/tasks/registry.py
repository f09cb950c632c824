"""The task registry: tag -> task class. Filled from one explicit list (:data:`tokunify.tasks.BUILTIN_TASKS`)
when :mod:`tokunify.tasks` is imported; a new task is one class plus :func:`register_task`."""

from typing import Any

from tokunify.core.vocab import UnifiedVocab
from tokunify.tasks.base import FormatError, TaskFormat, TaskOptions

FORMATS: dict[str, type[TaskFormat]] = {}
"""The task registry: tag -> task class, in registration order. Change it through
:func:`register_task` / :func:`unregister_task`."""


def register_task(cls: type[TaskFormat]) -> type[TaskFormat]:
    """Register a task class under its ``task`` tag (usable as a class decorator)."""
    name = getattr(cls, "task", None)
    if not isinstance(name, str) or not name:
        raise FormatError(f"{cls.__name__}: a task class needs a `task` tag")
    if name in FORMATS and FORMATS[name] is not cls:
        raise FormatError(f"task {name!r} is already registered ({FORMATS[name].__name__})")
    FORMATS[name] = cls
    return cls


def unregister_task(name: str) -> None:
    FORMATS.pop(name, None)


def task_class(task: str) -> type[TaskFormat]:
    """The registered class of a task tag. Unknown tags raise with the list of known ones."""
    try:
        return FORMATS[task]
    except KeyError:
        raise FormatError(f"unknown task {task!r}; known tasks: {list(FORMATS)}") from None


def get_format(task: str, vocab: UnifiedVocab, **kwargs: Any) -> TaskFormat:
    """The format for a task tag, built with keyword arguments."""
    return task_class(task)(vocab, **kwargs)


def make_task(task: str, vocab: UnifiedVocab, options: TaskOptions | None = None) -> TaskFormat:
    """The task for a tag, configured from shared :class:`TaskOptions`."""
    return task_class(task).from_options(vocab, options or TaskOptions())


def generation_tasks() -> list[str]:
    """Tags of the registered tasks that generate (they have an input modality and a preset)."""
    return [t for t, c in FORMATS.items() if c.input_modality is not None and c.preset is not None]


def find_task(input_modality: str, output_modality: str, vocab: UnifiedVocab) -> str:
    """The first registered, generating task of this vocab from one modality to another (e.g. the
    speech -> text task the evaluator transcribes with)."""
    for t in generation_tasks():
        cls = FORMATS[t]
        if t in vocab.tasks and cls.input_modality == input_modality:
            out = "text" if getattr(cls, "target_modality", None) == "text" else "speech"
            if out == output_modality:
                return t
    raise FormatError(f"no registered task turns {input_modality} into {output_modality}")
