"""Generated secrets are usable on a command line."""

from unittest import mock

from msgin5g.model import credentials


def test_generated_secret_never_starts_with_a_dash() -> None:
    draws = ["-starts-like-an-option", "fine-secret"]
    with mock.patch.object(credentials.secrets, "token_urlsafe", side_effect=draws):
        assert credentials.generate_secret() == "fine-secret"


def test_generated_secrets_are_long_and_distinct() -> None:
    made = {credentials.generate_secret() for _ in range(200)}
    assert len(made) == 200
    assert all(len(s) >= 43 and not s.startswith("-") for s in made)
