"""The routing file (CCPROXY_CONFIG): parsing, validation errors, and the Router's decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccproxy.config import ConfigError, Settings
from ccproxy.errors import ProxyError

ENV = {
    "OPENAI_API_KEY": "sk-x",
    "BIG_MODEL_NAME": "gpt-big",
    "SMALL_MODEL_NAME": "gpt-small",
    "ANTHROPIC_API_KEY": "sk-ant",
}

GOOD = """
[upstreams.anthropic]
kind = "anthropic"
base_url = "https://api.anthropic.com"

[upstreams.router]
kind = "chat"
base_url = "https://openrouter.ai/api/v1"
api_key_env = "OPENROUTER_KEY"
headers = { "X-Title" = "ccproxy" }
max_output_tokens = 8000

[[routes]]
match = "claude-opus-*"
upstream = "anthropic"

[[routes]]
match = "*haiku*"
upstream = "router"
model = "google/gemini-flash"

[[routes]]
match = "local-llama"
upstream = "default"
model = "llama-3"
"""


def settings(tmp_path: Path, text: str, **env: str) -> Settings:
    path = tmp_path / "routes.toml"
    path.write_text(text)
    return Settings.from_env({**ENV, "OPENROUTER_KEY": "or-key", "CCPROXY_CONFIG": str(path), **env})


def router(s: Settings):
    from ccproxy.routing import Router

    return Router(s.big_model, s.small_model, rules=s.rules, upstreams=s.upstreams)


def test_good_file_and_rule_order(tmp_path):
    s = settings(tmp_path, GOOD)
    assert [u.name for u in s.upstreams] == ["anthropic", "router"]
    by_name = {u.name: u for u in s.upstreams}
    assert by_name["anthropic"].api_key == "sk-ant" and by_name["router"].api_key == "or-key"
    assert by_name["router"].options.reasoning_style == "openrouter"
    assert ("x-title", "ccproxy") in by_name["router"].headers
    r = router(s)
    opus = r.route("claude-opus-4-8")
    assert (opus.upstream, opus.upstream_model) == ("anthropic", "claude-opus-4-8")
    haiku = r.route("claude-haiku-4-5")
    assert (haiku.upstream, haiku.upstream_model, haiku.max_output_tokens) == ("router", "google/gemini-flash", 8000)
    assert (r.route("local-llama").upstream, r.route("local-llama").upstream_model) == ("default", "llama-3")
    sonnet = r.route("claude-sonnet-5")  # no rule: the environment's mapping
    assert (sonnet.upstream, sonnet.upstream_model) == ("default", "gpt-big")
    ids = [m["id"] for m in r.models()]
    assert "local-llama" in ids and "claude-opus-4-8" in ids
    assert "routing file" in s.describe() and "or-key" not in s.describe()


def test_file_only_setup_needs_no_openai_settings(tmp_path):
    text = GOOD.replace('upstream = "default"', 'upstream = "router"')
    s = settings(tmp_path, text, OPENAI_API_KEY="", BIG_MODEL_NAME="", SMALL_MODEL_NAME="")
    assert s.api_key is None and s.big_model is None
    with pytest.raises(ProxyError) as err:
        router(s).route("claude-sonnet-5")  # no rule and no environment upstream
    assert err.value.status == 404 and err.value.error_type == "not_found_error"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "[upstreams.a]\nkind='chat'\nbase_url='https://x'\ncolour='red'\n[[routes]]\nmatch='*'\nupstream='a'",
            "unknown key(s) ['colour']",
        ),
        ("[upstreams.a]\nkind='grpc'\nbase_url='https://x'\n[[routes]]\nmatch='*'\nupstream='a'", "kind must be"),
        ("[upstreams.a]\nkind='chat'\nbase_url='x'\n[[routes]]\nmatch='*'\nupstream='a'", "base_url"),
        (
            "[upstreams.a]\nkind='chat'\nbase_url='https://x'\napi_key_env='NOPE'\n[[routes]]\nmatch='*'\nupstream='a'",
            "NOPE",
        ),
        ("[upstreams.a]\nkind='chat'\nbase_url='https://x'\n[[routes]]\nmatch='*'\nupstream='b'", "upstream 'b'"),
        ("[upstreams.a]\nkind='chat'\nbase_url='https://x'\n", "at least one [[routes]]"),
        (
            "[upstreams.default]\nkind='chat'\nbase_url='https://x'\n[[routes]]\nmatch='*'\nupstream='default'",
            "reserved",
        ),
        ("[upstreams.a\nkind=", "not valid TOML"),
        (
            "[upstreams.a]\nkind='chat'\nbase_url='https://x'\npass_client_key=true\n[[routes]]\nmatch='*'\nupstream='a'",
            "pass_client_key",
        ),
    ],
)
def test_invalid_files_give_one_line_errors(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as err:
        settings(tmp_path, text)
    assert fragment in str(err.value) and "\n" not in str(err.value) and "routes.toml" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**ENV, "CCPROXY_CONFIG": str(tmp_path / "nope.toml")})
    assert "cannot read" in str(err.value)


def test_responses_kind_is_accepted(tmp_path):
    s = settings(
        tmp_path,
        "[upstreams.r]\nkind='responses'\nbase_url='https://api.openai.com/v1'\n[[routes]]\nmatch='*'\nupstream='r'",
    )
    assert s.upstreams[0].kind == "responses" and s.upstreams[0].api_key_env == "OPENAI_API_KEY"
    assert s.upstreams[0].options.prompt_cache_key is True


def test_schema_drop_keys(tmp_path):
    text = "[upstreams.a]\nkind='chat'\nbase_url='https://x'\nschema_drop_keys=['$schema','format']\n[[routes]]\nmatch='*'\nupstream='a'"
    assert settings(tmp_path, text).upstreams[0].options.schema_drop_keys == ("$schema", "format")
    with pytest.raises(ConfigError) as err:
        settings(tmp_path, text.replace("['$schema','format']", "'format'"))
    assert "schema_drop_keys" in str(err.value)


PER_MODEL = """
[upstreams.ds]
kind = "chat"
base_url = "https://api.deepseek.com/v1"
api_key_env = "OPENROUTER_KEY"
max_output_tokens = 32000
model_limits = { "deepseek-chat" = 8192, "*-reasoner" = 64000 }

[[routes]]
match = "*haiku*"
upstream = "ds"
model = "deepseek-chat"

[[routes]]
match = "claude-opus-*"
upstream = "ds"
model = "deepseek-reasoner"

[[routes]]
match = "claude-sonnet-*"
upstream = "ds"
model = "deepseek-v4-pro"

[[routes]]
match = "tiny"
upstream = "ds"
model = "deepseek-chat"
max_output_tokens = 1000
"""


def test_per_model_limits_inside_one_upstream(tmp_path):
    s = settings(tmp_path, PER_MODEL)
    assert s.upstreams[0].options.reasoning_style == "deepseek"  # by base_url
    r = router(s)
    assert r.route("claude-haiku-4-5").max_output_tokens == 8192  # the model's own limit
    assert r.route("claude-opus-4-8").max_output_tokens == 64000  # glob
    assert r.route("claude-sonnet-5").max_output_tokens == 32000  # the upstream's
    assert r.route("tiny").max_output_tokens == 1000  # the rule's beats the model's


@pytest.mark.parametrize(
    ("replace", "fragment"),
    [
        (('"deepseek-chat" = 8192', '"deepseek-chat" = "big"'), "model_limits.'deepseek-chat' must be a positive"),
        (("max_output_tokens = 1000", "max_output_tokens = 0"), "routes[3].max_output_tokens must be a positive"),
        (('model_limits = { "deepseek-chat" = 8192, "*-reasoner" = 64000 }', "model_limits = 5"), "model_limits must"),
        (('kind = "chat"', 'kind = "chat"\nreasoning_style = "magic"'), "reasoning_style must be one of"),
    ],
)
def test_invalid_limits(tmp_path, replace, fragment):
    with pytest.raises(ConfigError) as err:
        settings(tmp_path, PER_MODEL.replace(*replace))
    assert fragment in str(err.value)


TRAITS = """
[upstreams.router]
kind = "chat"
base_url = "https://openrouter.ai/api/v1"
api_key_env = "OPENROUTER_KEY"
context_window = 64000
context_windows = { "big-*" = 1000000 }

[[routes]]
thinking = true
upstream = "router"
model = "deepseek/deepseek-r1"

[[routes]]
match = "claude-*"
min_input_tokens = 60000
upstream = "router"
model = "big-window"

[[routes]]
match = "claude-*"
upstream = "router"
model = "small-window"
"""


def test_trait_rules_route_by_what_a_request_needs(tmp_path):
    from ccproxy.routing import Traits

    r = router(settings(tmp_path, TRAITS))
    assert r.uses_traits and r.count_from == 60000
    assert r.route("claude-sonnet-5").upstream_model == "small-window"  # no traits known: plain rules only
    assert r.route("claude-sonnet-5", Traits(thinking=True)).upstream_model == "deepseek/deepseek-r1"
    assert r.route("claude-sonnet-5", Traits(input_tokens=70000)).upstream_model == "big-window"
    assert r.route("claude-sonnet-5", Traits(input_tokens=10)).upstream_model == "small-window"
    # windows: the upstream's per-model glob, else the upstream's own
    assert r.route("claude-sonnet-5", Traits(input_tokens=70000)).context_window == 1000000
    assert r.route("claude-sonnet-5").context_window == 64000
    assert r.long_context_route("claude-x", Traits(input_tokens=90000)).upstream_model == "big-window"
    # naming an upstream: "upstream,model" and "upstream/model" (an OpenRouter id keeps its slash)
    assert (r.route("router,x-ai/grok-4").upstream, r.route("router,x-ai/grok-4").upstream_model) == (
        "router",
        "x-ai/grok-4",
    )
    assert r.route("router/google/gemini-2.5-pro").upstream_model == "google/gemini-2.5-pro"
    assert r.route("google/gemini-2.5-pro").upstream == "default"  # "google" is no upstream


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ('thinking = "yes"\nupstream = "router"', "thinking must be true or false"),
        ('match = "a"\nmin_input_tokens = -5\nupstream = "router"', "min_input_tokens must be a positive integer"),
        ('match = "a"\nupstream = "router"\ncolour = "red"', "unknown key(s) ['colour']"),
        ('upstream = "router"', "match must be a model id or glob"),  # no match and no trait
    ],
)
def test_bad_trait_rules_name_the_entry(tmp_path, rule, problem):
    text = TRAITS.split("[[routes]]")[0] + f"[[routes]]\n{rule}\n"
    with pytest.raises(ConfigError) as err:
        settings(tmp_path, text)
    assert problem in str(err.value) and "routes[0]" in str(err.value)


def test_known_context_windows_and_the_environment_override():
    from ccproxy.routing import Router

    assert Router("gpt-4o", "gpt-4o-mini").route("claude-sonnet-5").context_window == 128000
    assert Router("my-local-model", "x").route("claude-sonnet-5").context_window is None  # unknown: no check
    assert Router("gpt-4o", "x", context_window=32000).route("claude-sonnet-5").context_window == 32000
    assert Settings.from_env({**ENV, "CCPROXY_CONTEXT_WINDOW": "32768"}).context_window == 32768
