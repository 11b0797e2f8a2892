"""Option dataclasses -> flags, YAML keys and saved configs (gpt2kit.config), groups included."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from gpt2kit.config import add_arguments, build_config, flat_names, group, option, to_dict
from gpt2kit.errors import UserError


@dataclass
class Optim:
    """Optimizer options."""

    lr: float = option(1e-3, help="Peak learning rate.")
    betas: list[float] = option([0.9, 0.95], help="Adam betas.")


@dataclass
class Command:
    sources: list[str] = option([], help="Inputs.", positional=True, metavar="SOURCE")
    steps: int | None = option(None, help="Steps.")
    optim: Optim = group(Optim, "optimization")
    verbose: bool = option(False, help="Talk more.")


def parse(argv: list[str]) -> Command:
    parser = argparse.ArgumentParser()
    add_arguments(parser, Command)
    return build_config(Command, parser.parse_args(argv))


def test_group_options_are_flat_flags_and_land_in_their_group():
    c = parse(["a.txt", "--lr", "0.5", "--betas", "0.8", "--betas", "0.9", "--verbose"])
    assert c.sources == ["a.txt"] and c.verbose is True and c.steps is None
    assert c.optim == Optim(lr=0.5, betas=[0.8, 0.9])
    assert parse([]).optim == Optim()


def test_help_lists_a_groups_options_under_its_title():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Command)
    text = parser.format_help()
    section = text[text.index("\noptimization:") :]
    assert "--lr LR" in section and "Peak learning rate." in section
    assert "--verbose" not in section  # an option outside the group stays outside


def test_yaml_keys_are_flat_and_flags_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.25\nsteps: 7\n")
    c = build_config(Command, {"steps": 9}, path)
    assert c.optim.lr == 0.25 and c.steps == 9
    path.write_text("optim: {lr: 1}\n")  # groups are not keys
    with pytest.raises(UserError, match="unknown keys: optim"):
        build_config(Command, {}, path)


def test_every_problem_of_a_yaml_file_is_reported_at_once(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: fast\nsteps: many\nstepz: 3\n")
    with pytest.raises(UserError) as e:
        build_config(Command, {}, path)
    assert e.value.problems[0].startswith("unknown keys: stepz.")
    assert e.value.problems[1:] == [
        "Config key 'lr': 'fast' is not a valid float.",
        "Config key 'steps': 'many' is not a valid int.",
    ]


def test_to_dict_is_flat_and_reads_back(tmp_path):
    c = parse(["x", "--lr", "0.125"])
    d = to_dict(c)
    assert d == {
        "sources": ["x"],
        "steps": None,
        "lr": 0.125,
        "betas": [0.9, 0.95],
        "verbose": False,
    }
    assert build_config(Command, d) == c


def test_an_option_declared_twice_is_refused():
    @dataclass
    class Clash:
        lr: float = option(0.1, help="Again.")
        optim: Optim = group(Optim, "optimization")

    with pytest.raises(TypeError, match="declared twice: lr"):
        add_arguments(argparse.ArgumentParser(), Clash)


def test_flat_names_build_read_and_set_options_inside_their_group():
    @flat_names
    @dataclass
    class Flat:
        steps: int = option(1, help="Steps.")
        optim: Optim = group(Optim, "optimization")

    c = Flat(lr=0.5, steps=3)
    assert c.optim == Optim(lr=0.5) and c.lr == 0.5 and c.steps == 3
    c.lr = 0.25
    assert c.optim.lr == 0.25
    assert Flat(optim=Optim(lr=2.0), betas=[0.5]).optim == Optim(lr=2.0, betas=[0.5])
    assert Flat().optim is not Flat().optim
