"""What the Dockerfile needs from the repository, checked without a Docker engine.

- Every file or directory a COPY/ADD takes from the build context exists and is not
  excluded by .dockerignore (Docker's rules: patterns in order, the last match wins, `!`
  re-includes, a pattern that matches a directory matches everything in it).
- Every member of the Cargo workspace, and Cargo.lock, reach the build stage (otherwise
  `cargo build --locked` fails in the image, whatever the linter says).
- The final stage runs as a numeric non-root user with `ENTRYPOINT ["cronfleet"]`.

hadolint (run by scripts/validate-deploy) lints the rest.

Usage: dockerfile.py CONTEXT_DIR
"""

import glob
import json
import os
import re
import sys
import tomllib

from deploycheck import Report


def instructions(path):
    """(keyword, arguments) of each instruction, continuation lines joined."""
    result, current = [], ""
    with open(path) as file:
        for line in file:
            stripped = line.strip()
            if not current and (not stripped or stripped.startswith("#")):
                continue
            if stripped.startswith("#"):
                continue  # a comment inside a continued instruction
            if stripped.endswith("\\"):
                current += stripped[:-1] + " "
                continue
            current += stripped
            keyword, _, rest = current.partition(" ")
            result.append((keyword.upper(), rest.strip()))
            current = ""
    return result


def pattern_regex(pattern):
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            regex += ".*"
            index += 2
        elif pattern[index] == "*":
            regex += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            regex += "[^/]"
            index += 1
        else:
            regex += re.escape(pattern[index])
            index += 1
    return re.compile(regex + r"\Z")


def ignore_rules(context):
    rules = []
    path = os.path.join(context, ".dockerignore")
    if os.path.exists(path):
        with open(path) as file:
            for line in file:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                negated = line.startswith("!")
                pattern = os.path.normpath(line.lstrip("!").strip().strip("/"))
                rules.append((negated, pattern_regex(pattern)))
    return rules


def excluded(relative, rules):
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negated, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            result = not negated
    return result


def copied_sources(arguments):
    """The context paths of a COPY/ADD (None for one from another stage)."""
    if arguments.startswith("["):
        words = json.loads(arguments)
    else:
        words = arguments.split()
    flags = [word for word in words if word.startswith("--")]
    if any(flag.startswith("--from=") for flag in flags):
        return None
    paths = [word for word in words if not word.startswith("--")]
    return paths[:-1]


def main():
    context = sys.argv[1]
    report = Report("Dockerfile")
    rules = ignore_rules(context)
    steps = instructions(os.path.join(context, "Dockerfile"))

    in_image = []
    for keyword, arguments in steps:
        if keyword not in ("COPY", "ADD"):
            continue
        sources = copied_sources(arguments)
        for source in sources or []:
            matches = glob.glob(os.path.join(context, source))
            if not report.check(matches, "COPY", f"{source} does not exist"):
                continue
            for match in matches:
                relative = os.path.relpath(match, context)
                report.check(not excluded(relative, rules), "COPY",
                             f"{relative} is excluded by .dockerignore")
                in_image.append(relative)

    def reaches_build(relative):
        covered = any(relative == src or relative.startswith(src.rstrip("/") + "/") for src in in_image)
        return covered and not excluded(relative, rules)

    with open(os.path.join(context, "Cargo.toml"), "rb") as file:
        members = tomllib.load(file)["workspace"]["members"]
    for member in members:
        for manifest in glob.glob(os.path.join(context, member, "Cargo.toml")):
            relative = os.path.relpath(manifest, context)
            report.check(reaches_build(relative), "workspace",
                         f"{relative} (a workspace member) is not copied into the build stage")
    report.check(reaches_build("Cargo.lock"), "workspace", "Cargo.lock is not copied (the build uses --locked)")

    final = []
    for keyword, arguments in steps:
        if keyword == "FROM":
            final = []
        final.append((keyword, arguments))
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    user = users[-1].split(":")[0] if users else "0"
    report.check(user.isdigit() and user != "0", "final stage",
                 f"USER must be a numeric non-root uid (runAsNonRoot checks it), is {user!r}")
    entrypoints = [arguments for keyword, arguments in final if keyword == "ENTRYPOINT"]
    report.check(entrypoints and json.loads(entrypoints[-1]) == ["cronfleet"], "final stage",
                 'ENTRYPOINT must be ["cronfleet"]')
    report.finish(f"{len(in_image)} context paths copied, {len(members)} workspace members in the build")


if __name__ == "__main__":
    main()
