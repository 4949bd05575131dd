import hashlib
import json
import math

import pytest

from sharpness import SharpnessError, Spec

SPECS = [
    Spec(case="worst", norm="linf", rho=0.002),
    Spec(case="average", norm="l2", rho=0.1, n_iters=50, antithetic=True),
    Spec(case="worst", norm="l2", rho=1e-05, scaling="filterwise", eta=0.01, logit_norm=True, m=64, n_examples=256),
    Spec(case="worst", norm="l2", rho=0.5, scaling="standard", init="random", n_restarts=3, seed=7),
    Spec(case="average", norm="linf", rho=3.0, params=r"^(fc|head)\.weight$"),
    Spec(case="worst", norm="linf", rho=0.1, params='a,b:c="d" e'),
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_round_trips(spec: Spec) -> None:
    assert Spec.parse(str(spec)) == spec == Spec.from_string(spec.to_string())
    assert Spec.from_json(spec.to_json()) == spec
    assert Spec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert str(Spec.parse(str(spec))) == str(spec)


def test_defaults_match_design() -> None:
    s = Spec(case="worst", norm="l2", rho=0.1)
    assert (s.scaling, s.eta, s.logit_norm, s.m, s.n_examples, s.n_iters, s.n_restarts, s.init, s.seed, s.params) == (
        "elementwise", 0.0, False, 128, 1024, 20, 1, "zero", 0, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("worst-linf:rho=0.002", Spec(case="worst", norm="linf", rho=0.002)),
        ("worst-linf-elementwise:rho=0.002,m=128", Spec(case="worst", norm="linf", rho=0.002)),
        ("average-l2-standard:n_iters=10,rho=1",
         Spec(case="average", norm="l2", rho=1.0, scaling="standard", n_iters=10)),
        ("worst-l2:rho=0.1,logit_norm=true", Spec(case="worst", norm="l2", rho=0.1, logit_norm=True)),
    ],
)
def test_parse_accepts_short_and_reordered_forms(text: str, expected: Spec) -> None:
    assert Spec.parse(text) == expected


def test_canonical_form_omits_defaults_and_id_hashes_it() -> None:
    s = Spec(case="worst", norm="linf", rho=0.002, m=128, n_iters=40)
    assert str(s) == "worst-linf-elementwise:rho=0.002,n_iters=40"
    assert s.id == hashlib.sha256(str(s).encode()).hexdigest()[:12]
    assert s.id != s.replace(n_iters=41).id
    assert Spec(case="worst", norm="linf", rho=0.002).id == Spec.parse("worst-linf:rho=2e-3").id


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"rho": 0.0}, "rho"),
        ({"rho": -1.0}, "rho"),
        ({"rho": math.nan}, "rho"),
        ({"rho": math.inf}, "rho"),
        ({"rho": "0.1"}, "rho"),
        ({"case": "best"}, "'best'"),
        ({"norm": "l1"}, "'l1'"),
        ({"scaling": "layerwise"}, "'layerwise'"),
        ({"init": "gaussian"}, "'gaussian'"),
        ({"m": 0}, "m"),
        ({"m": -4}, "m"),
        ({"m": 3}, "multiple"),
        ({"n_iters": 0}, "n_iters"),
        ({"n_restarts": 1.5}, "n_restarts"),
        ({"eta": -0.1}, "eta"),
        ({"logit_norm": 1}, "logit_norm"),
        ({"params": "("}, "regular expression"),
        ({"case": "average", "antithetic": True, "n_iters": 5}, "even"),
    ],
)
def test_invalid_fields_name_the_value(kwargs: dict, needle: str) -> None:
    base = {"case": "worst", "norm": "l2", "rho": 0.1} | kwargs
    with pytest.raises(SharpnessError, match=None) as info:
        Spec(**base)
    assert needle in str(info.value)


@pytest.mark.parametrize("text", ["worst:rho=1", "worst-l2", "worst-l2:rho=1,foo=2", "worst-l2:rho=x",
                                  "worst-l2:rho=1,rho=2", "worst-l2:rho=1,m=1.5", "worst-l2:rho=1,logit_norm=maybe"])
def test_parse_rejects_bad_strings(text: str) -> None:
    with pytest.raises(SharpnessError):
        Spec.parse(text)


@pytest.mark.parametrize(("text", "params"), [
    (r'worst-l2:rho=1,params="^(fc|head)\."', r"^(fc|head)\."),     # a regex as typed: backslashes kept
    (r'worst-l2:rho=1,params="^(fc|head)\\."', r"^(fc|head)\."),   # the canonical (JSON) form of the same
    ('worst-l2:rho=1,params="a, b",m=64', "a, b"),
])
def test_quoted_values_read_as_json_or_as_typed(text: str, params: str) -> None:
    spec = Spec.parse(text)
    assert spec.params == params and Spec.parse(str(spec)) == spec


def test_an_unterminated_quote_is_named() -> None:
    with pytest.raises(SharpnessError, match="unterminated quote in the value of params"):
        Spec.parse('worst-l2:rho=1,params="abc')


def test_frozen_and_unknown_json_field() -> None:
    s = Spec(case="worst", norm="l2", rho=0.1)
    with pytest.raises(AttributeError):
        s.rho = 0.2  # type: ignore[misc]
    with pytest.raises(SharpnessError, match="bogus"):
        Spec.from_dict({"case": "worst", "norm": "l2", "rho": 0.1, "bogus": 1})
