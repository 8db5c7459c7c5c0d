"""code_version: what a result row records as the version of the code that produced it."""

import pytest

from workloads.environment import CODE_VERSION_ENV, code_version


@pytest.fixture
def fresh_cache():
    """code_version is cached per process: each test sees its own environment."""
    code_version.cache_clear()
    yield
    code_version.cache_clear()


def test_a_copy_without_git_says_so_and_names_the_variable(tmp_path, monkeypatch, fresh_cache):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repository above it either
    version = code_version(str(tmp_path))
    assert version.startswith("unknown") and "no git checkout" in version and CODE_VERSION_ENV in version


def test_the_variable_names_the_version_of_a_copy(monkeypatch, fresh_cache):
    monkeypatch.setenv(CODE_VERSION_ENV, "4f2c9e1a0b3c+dirty")
    assert code_version() == "4f2c9e1a0b3c+dirty"
