"""The README stays a first-hour page, and the docs it points to stay reachable.

The depth lives in docs/; the README holds what it is, the two commands, a run, an
experiment, the experiment list and links. CI (.ci/run) runs the README's test command,
so the command a new user copies is the one that is tested.
"""

import glob
import os
import re

from deeplearn import experiments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
CI = os.path.join(ROOT, ".ci", "run")

README_MAX_LINES = 140  # one or two screens; the depth goes to docs/
BEGIN, END = "<!-- experiments:begin -->", "<!-- experiments:end -->"

# [text](target), ![alt](target), [name]: target, and <img src="target">
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
IMG = re.compile(r"<img\b[^>]*\bsrc=[\"']([^\"']+)[\"']", re.IGNORECASE)


def read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def without_code(text):
  """Markdown outside fenced code blocks: a link inside code is not a link."""
  return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def relative_links(path):
  text = without_code(read(path))
  targets = LINK.findall(text) + REFERENCE.findall(text) + IMG.findall(text)
  return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def section(text, title):
  """The body of the `## title` section, up to the next heading of level 1 or 2."""
  match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^#{{1,2}} |\Z)", text,
                    re.MULTILINE | re.DOTALL)
  assert match, f"README.md has no '## {title}' section"
  return match.group(1)


def code_lines(text):
  blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
  return [line for block in blocks for line in block.splitlines()]


def ci_commands():
  """The commands .ci/run runs: every line but comments, `set` and the `cd` to the root."""
  lines = [line.strip() for line in read(CI).splitlines()]
  return [line for line in lines
          if line and not line.startswith(("#", "set ", "cd "))]


def test_the_readme_fits_on_one_or_two_screens():
  lines = read(README).splitlines()
  assert len(lines) <= README_MAX_LINES, (
      f"README.md has {len(lines)} lines, more than {README_MAX_LINES}: move the depth "
      "into a docs/ page and link it from the README's 'Read more'")


def test_every_relative_link_in_readme_and_docs_names_an_existing_file_without_anchor():
  checked, broken = 0, []
  for path in [README] + DOCS:
    for target in relative_links(path):
      checked += 1
      name = os.path.relpath(path, ROOT)
      if "#" in target:
        broken.append(f"{name}: {target} has an anchor (headings move; link the file)")
        continue
      if not os.path.exists(os.path.join(os.path.dirname(path), target)):
        broken.append(f"{name}: {target} does not exist (relative to {os.path.dirname(name) or '.'}/)")
  assert checked > 0, "no relative links found: the link pattern is broken"
  assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
  linked = {os.path.normpath(os.path.join(ROOT, t)) for t in relative_links(README)}
  orphans = [os.path.relpath(p, ROOT) for p in DOCS if os.path.normpath(p) not in linked]
  assert not orphans, f"docs pages no README link reaches: {orphans}"


def test_ci_runs_exactly_the_readmes_test_command():
  commands = ci_commands()
  assert len(commands) == 1, f".ci/run should run one command, the README's: {commands}"
  readme_tests = [line for line in code_lines(section(read(README), "Two commands"))
                  if "pytest" in line]
  assert readme_tests, "the README's 'Two commands' has no pytest command"
  assert commands[0] in readme_tests, (
      f".ci/run runs {commands[0]!r}, the README says {readme_tests}")


def test_the_readme_holds_one_experiments_block_for_the_generated_list():
  lines = read(README).splitlines()
  assert lines.count(BEGIN) == 1 and lines.count(END) == 1, (
      f"README.md needs exactly one line {BEGIN} and one line {END}")
  begin, end = lines.index(BEGIN), lines.index(END)
  assert begin < end - 1, "the experiments block is empty or its markers are reversed"
  assert "mnist1d_cnn" in "\n".join(lines[begin:end]), (
      "the experiments block does not list the default experiment, mnist1d_cnn")


def test_the_experiment_table_is_the_listings():
  # Regenerate with: python -m deeplearn.experiments --markdown
  text = open(os.path.join(ROOT, "README.md"), encoding="utf8").read()
  block = text.split("<!-- experiments:begin -->\n")[1].split(
      "<!-- experiments:end -->")[0]
  assert block.strip() == experiments.markdown(experiments.all_experiments())
