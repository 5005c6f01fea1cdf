"""Math prompt templates: a template must hold the `{problem}` placeholder and no other field.

check_prompt_template("{problem}\\n\\nAnswer in a box.", "data.math_prompt_template")
"""

from __future__ import annotations

from harness.errors import ConfigError


def prompt_template_problem(template: str) -> str | None:
    """What is wrong with a math prompt template (None when nothing): it must contain the
    `{problem}` placeholder and no other field; literal braces are written `{{` and `}}`."""
    import string

    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        return (
            f"the template has a stray brace ({exc}); write a literal brace as {{{{ or }}}}, "
            f"and the problem as {{problem}}"
        )
    if "problem" not in fields:
        return (
            "the template has no {problem} placeholder, so every prompt would be the same text; "
            "put {problem} where the problem goes"
        )
    others = sorted({name for name in fields if name != "problem"})
    if others:
        return (
            f"the template has placeholder(s) {', '.join('{' + n + '}' for n in others)} besides {{problem}}; "
            f"only {{problem}} is filled (write a literal brace as {{{{ or }}}})"
        )
    try:
        template.format(problem="x")
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        return f"the template cannot be filled ({type(exc).__name__}: {exc})"
    return None


def check_prompt_template(template: str, where: str) -> None:
    """ConfigError naming `where` when `template` is not a usable math prompt template."""
    problem = prompt_template_problem(template)
    if problem:
        raise ConfigError(f"{where} = {template!r:.200} is invalid: {problem}.")
