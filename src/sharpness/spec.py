"""``Spec``: one serialisable definition of sharpness.

A spec has three equivalent forms that round-trip exactly:

* the frozen dataclass ``Spec(case="worst", norm="linf", rho=0.002)``;
* a JSON object with every field (:meth:`Spec.to_json` / :meth:`Spec.from_json`);
* a one-line string for command lines (:meth:`Spec.parse` / ``str(spec)``)::

      worst-linf-elementwise:rho=0.002,m=128,params="^(fc|head)\\."

  The head is ``case-norm-scaling``; after the colon come ``key=value`` pairs,
  ``rho`` first, then every other field that differs from its default, in
  declaration order. Values holding ``, : = "`` or spaces are JSON-quoted.
  On input the scaling may be left out of the head (``worst-l2:rho=0.1``) and
  pairs may come in any order.

The id is a hash of the canonical string, which omits defaults: adding a field
with a default later keeps every existing id valid.

>>> s = Spec(case="average", norm="l2", rho=0.1, n_iters=50)
>>> str(s)
'average-l2-elementwise:rho=0.1,n_iters=50'
>>> Spec.parse(str(s)) == s and Spec.from_json(s.to_json()) == s
True
>>> len(s.id)
12
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from typing import Any, Literal, get_args

from sharpness.errors import SharpnessError

Case = Literal["worst", "average", "trace", "eigen", "keskar", "pacbayes"]
Norm = Literal["l2", "linf"]
Scaling = Literal["standard", "elementwise", "filterwise"]
Init = Literal["zero", "random"]
Hvp = Literal["auto", "double_backward", "finite_difference"]
Target = Literal["error", "loss"]
Estimator = Literal["hutchinson", "hutchpp"]
Geometry = Literal["flat", "inv", "mix"]
SecondOrder = Literal["blocks", "all", "none", "exact"]

_QUOTE_NEEDED = re.compile(r'[,:=" \t]|^$')


@dataclasses.dataclass(frozen=True)
class Spec:
    """A definition of sharpness.

    The cases (``scaling`` and ``eta`` build ``c(w)`` and ``D = diag(c)`` in every one of them):

    * ``worst``: max over ``||u||_p <= rho`` of the loss increase (Auto-PGD, ``n_iters`` steps).
    * ``average``: mean loss increase under ``u ~ rho N(0, I)`` (l2) or ``U[-rho, rho]`` (linf), ``n_iters`` draws.
    * ``trace``: the raw ``tr(D H D)`` (H the Hessian of the m-batch loss), Hutchinson with ``n_iters``
      Rademacher probes, or Hutch++ with as many products (``estimator``); ``stderr`` is its Monte-Carlo
      error. Near a minimum ``average-l2`` is ``rho^2/2`` times it. Write ``l2`` and ``rho=1``
      (``trace-l2-elementwise:rho=1.0,n_iters=64``).
    * ``eigen``: the raw ``lambda_max(D H D)``, Lanczos with at most ``n_iters`` steps; ``Result.details``
      reports the residual bound and convergence. Near a minimum ``worst-l2`` is ``rho^2/2`` times it.
      Write ``l2`` and ``rho=1``.
    * ``keskar``: Keskar et al.'s ``100 (max L - L) / (1 + L)`` with the max over the ball of ``worst``;
      their box ``|delta_i| <= eps (|w_i| + 1)`` is ``keskar-linf-elementwise:rho=<eps>,eta=1.0``.
    * ``pacbayes``: Jiang et al.'s flatness ``1 / sigma^2`` for the largest ``sigma`` whose perturbation
      raises the ``target`` (0-1 error, their choice, or loss) by at most ``rho`` (their 0.1), found by
      bisection. ``l2``: Gaussian ``delta_i ~ N(0, sigma^2 c0_i^2 + eta^2)`` with ``c0`` the scale
      without ``eta``; ``linf``: the worst case over the box ``|delta_i| <= sigma c0_i + eta``.
      Jiang's ``pacbayes.flatness`` is ``pacbayes-l2-standard:rho=0.1``, ``pacbayes.mag.flatness``
      ``pacbayes-l2-elementwise:rho=0.1,eta=0.001``; ``linf`` gives their ``sharpness.flatness`` twins.

    Args:
        case: one of the cases above.
        norm: ``"l2"`` or ``"linf"``: the ball of the worst case; Gaussian
            (``u ~ rho N(0, I)``) or uniform (``u ~ U[-rho, rho]``) draws of the average case.
        rho: radius in normalised coordinates ``u``, where ``delta = c(w) * u``; pacbayes: the
            tolerated rise of the target; trace and eigen: unused, always 1.
        scaling: how ``c(w)`` is built: ``standard`` (1), ``elementwise`` (``|w| + eta``),
            ``filterwise`` (norm of each output filter ``+ eta``).
        eta: added to the scale; with ``eta = 0`` elementwise sharpness is
            invariant to function-preserving elementwise rescalings.
        logit_norm: centre and L2-normalise the logits before the loss.
        m: examples per m-batch when ``data`` is an ``(X, Y)`` pair.
        n_examples: examples drawn from ``(X, Y)``; a multiple of ``m``.
        n_iters: ascent iterations (worst, keskar) or noise draws per m-batch (average); trace:
            Hutchinson probes; eigen: the most Lanczos steps; pacbayes: draws (l2) or ascent
            iterations (linf) at each trial scale.
        n_restarts: worst case: searches per m-batch; the best is kept. The first
            starts from ``init``, later ones from a random point.
        init: ``"zero"`` or ``"random"`` (uniform in the ball or box) start.
        seed: seed of the measurement's own generator (subset and draws).
        params: regular expression (``re.search``) over parameter names selecting
            what is perturbed; ``None`` perturbs every floating-point parameter.
        antithetic: average case: draws come in pairs ``(u, -u)``, which cancels
            the first-order term; the standard error is computed over pairs.
        hvp: trace and eigen: Hessian-vector products by ``double_backward``, by
            ``finite_difference`` of gradients, or ``auto``: double backward, where a second
            derivative is not implemented again with attention on its math kernel, then finite
            differences (see :mod:`sharpness.curvature`).
        subspace: keskar: search a random subspace of this dimension (0: the full space).
        target: pacbayes: the increase bounded by ``rho``: ``"error"`` (0-1) or ``"loss"``.
        fold_bn: measure a copy of the model whose BatchNorm running statistics are folded
            into the preceding Conv/Linear layer (any case).
        estimator: trace: ``"hutchinson"`` (``n_iters`` Rademacher probes) or ``"hutchpp"``
            (Hutch++, Meyer et al. 2021: the same ``n_iters`` Hessian-vector products, a third of
            them to find the top of the spectrum, whose trace is then exact; needs ``n_iters >= 3``).
        geometry: worst case, ``l2``, ``elementwise`` only: ``"flat"`` (adaptive sharpness) or geodesic
            sharpness on the quotient by the GL symmetries of attention heads (da Silva et al. 2025) with
            the ``"inv"`` or ``"mix"`` metric (:mod:`sharpness.geodesic`). Parameters outside every
            symmetry block keep the elementwise treatment (``c = |w| + eta``); ``rho`` bounds the total
            metric norm.
        gram_eps: geodesic: the relaxation ``S -> S + gram_eps I`` of every Gram matrix of a block
            (0 keeps the invariance exact; > 0 admits rank-deficient blocks).
        fold_bias: geodesic: biases of the query, key and value projections are rows of their blocks
            (needed for exact invariance: the symmetry moves them too); ``False`` treats them elementwise.
        second_order: geodesic: where the perturbed point follows the second-order geodesic
            ``w + xi - Gamma(xi, xi) / 2``: in the symmetry ``"blocks"`` (the other parameters move by
            ``w + xi``), in ``"all"`` parameters (the elementwise metric's geodesic elsewhere), or
            ``"none"`` (first order everywhere, the paper's ablation); ``"exact"``: the exact geodesic,
            known in closed form for GL(1) blocks only (diagonal networks).
        trainable_only: perturb only parameters with ``requires_grad`` (a frozen backbone's weights stay
            put; with ``params`` both must hold). ``params`` cannot say this: any word is a valid regex.
    """

    case: Case
    norm: Norm
    rho: float
    scaling: Scaling = "elementwise"
    eta: float = 0.0
    logit_norm: bool = False
    m: int = 128
    n_examples: int = 1024
    n_iters: int = 20
    n_restarts: int = 1
    init: Init = "zero"
    seed: int = 0
    params: str | None = None
    antithetic: bool = False
    hvp: Hvp = "auto"
    subspace: int = 0
    target: Target = "error"
    fold_bn: bool = False
    estimator: Estimator = "hutchinson"
    geometry: Geometry = "flat"
    gram_eps: float = 0.0
    fold_bias: bool = True
    second_order: SecondOrder = "blocks"
    trainable_only: bool = False

    def __post_init__(self) -> None:
        _check_choice("case", self.case, Case)
        _check_choice("norm", self.norm, Norm)
        _check_choice("scaling", self.scaling, Scaling)
        _check_choice("init", self.init, Init)
        _check_choice("hvp", self.hvp, Hvp)
        _check_choice("target", self.target, Target)
        _check_choice("estimator", self.estimator, Estimator)
        _check_choice("geometry", self.geometry, Geometry)
        _check_choice("second_order", self.second_order, SecondOrder)
        object.__setattr__(self, "rho", _positive_float("rho", self.rho))
        object.__setattr__(self, "eta", _nonnegative_float("eta", self.eta))
        object.__setattr__(self, "gram_eps", _nonnegative_float("gram_eps", self.gram_eps))
        for name in ("m", "n_examples", "n_iters", "n_restarts"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("seed", self.seed, minimum=0)
        _check_int("subspace", self.subspace, minimum=0)
        for name in ("logit_norm", "antithetic", "fold_bn", "fold_bias", "trainable_only"):
            if not isinstance(getattr(self, name), bool):
                raise SharpnessError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.n_examples % self.m:
            raise SharpnessError(
                f"n_examples must be a multiple of m, got n_examples={self.n_examples}, m={self.m}"
            )
        if self.antithetic and self.case in ("average", "pacbayes") and self.n_iters % 2:
            raise SharpnessError(f"antithetic draws need an even n_iters, got n_iters={self.n_iters}")
        if self.params is not None:
            if not isinstance(self.params, str):
                raise SharpnessError(f"params must be a regular expression string, got {self.params!r}")
            try:
                re.compile(self.params)
            except re.error as e:
                raise SharpnessError(f"params is not a valid regular expression: {self.params!r} ({e})") from None
        _check_case_fields(self)

    # ------------------------------------------------------------------ forms
    @property
    def id(self) -> str:
        """Stable 12-hex-digit id: a hash of the canonical string form."""
        return hashlib.sha256(str(self).encode()).hexdigest()[:12]

    def __str__(self) -> str:
        head = f"{self.case}-{self.norm}-{self.scaling}"
        pairs = [f"rho={_format(self.rho)}"]
        for f in dataclasses.fields(self):
            if f.name in ("case", "norm", "scaling", "rho"):
                continue
            value = getattr(self, f.name)
            if value != f.default:
                pairs.append(f"{f.name}={_format(value)}")
        return head + ":" + ",".join(pairs)

    def to_string(self) -> str:
        """The canonical one-line form (same as ``str(spec)``)."""
        return str(self)

    @classmethod
    def from_string(cls, text: str) -> Spec:
        """Alias of :meth:`parse`."""
        return cls.parse(text)

    @classmethod
    def parse(cls, text: str) -> Spec:
        """Read the one-line form, e.g. ``"worst-linf:rho=0.002,m=128"``."""
        if not isinstance(text, str):
            raise SharpnessError(f"a spec string is expected, got {text!r}")
        head, sep, tail = text.strip().partition(":")
        parts = head.split("-")
        if len(parts) not in (2, 3):
            raise SharpnessError(
                f"spec head must be 'case-norm[-scaling]', got {head!r} in {text!r}"
            )
        kwargs: dict[str, Any] = dict(zip(("case", "norm", "scaling"), parts))
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for key, raw in _split_pairs(tail, text) if sep else []:
            if key not in types or key in ("case", "norm"):
                raise SharpnessError(f"unknown spec key {key!r} in {text!r}")
            if key in kwargs:
                raise SharpnessError(f"spec key {key!r} given twice in {text!r}")
            kwargs[key] = _parse_value(key, raw, str(types[key]), text)
        if "rho" not in kwargs:
            raise SharpnessError(f"spec string needs rho=..., got {text!r}")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-serialisable."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Spec:
        """Inverse of :meth:`to_dict`; missing fields take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SharpnessError(f"unknown spec field(s) {unknown} in {data!r}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Spec:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> Spec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------- validation
def _check_choice(name: str, value: object, choices: object) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise SharpnessError(f"unknown {name} {value!r}; expected one of {list(allowed)}")


# Fields read by some cases only; elsewhere they must keep their default, so that one measure has one id.
_CASE_ONLY = {"hvp": ("trace", "eigen"), "subspace": ("keskar",), "target": ("pacbayes",), "estimator": ("trace",)}


def _check_case_fields(spec: Spec) -> None:
    for f in dataclasses.fields(spec):
        cases = _CASE_ONLY.get(f.name)
        if cases and spec.case not in cases and getattr(spec, f.name) != f.default:
            raise SharpnessError(
                f"{f.name}={getattr(spec, f.name)!r} applies only to case {' or '.join(cases)}, not {spec.case!r}"
            )
    if spec.case in ("trace", "eigen") and (spec.norm != "l2" or spec.rho != 1.0):
        raise SharpnessError(
            f"case {spec.case!r} reports the raw value for D H D, with no radius: write norm 'l2' and rho=1 "
            f"(e.g. '{spec.case}-l2-{spec.scaling}:rho=1'), got norm={spec.norm!r}, rho={spec.rho!r}"
        )
    if spec.case == "pacbayes" and spec.target == "error" and spec.rho >= 1:
        raise SharpnessError(f"pacbayes: rho is the tolerated rise of the 0-1 error and must be < 1, got {spec.rho!r}")
    if spec.estimator == "hutchpp" and spec.n_iters < 3:
        raise SharpnessError(f"hutchpp splits n_iters products in three parts: needs n_iters >= 3, got {spec.n_iters}")
    _check_geometry_fields(spec)
    if spec.subspace and spec.scaling == "filterwise":
        raise SharpnessError("keskar: a random subspace has no filters; use scaling standard or elementwise")


# Fields that only geodesic sharpness reads; with geometry="flat" they must keep their default.
_GEODESIC_ONLY = ("gram_eps", "fold_bias", "second_order")


def _check_geometry_fields(spec: Spec) -> None:
    if spec.geometry == "flat":
        for f in dataclasses.fields(spec):
            if f.name in _GEODESIC_ONLY and getattr(spec, f.name) != f.default:
                raise SharpnessError(
                    f"{f.name}={getattr(spec, f.name)!r} applies only to geodesic sharpness (geometry 'inv' or 'mix')"
                )
        return
    wrong = {k: v for k, v in (("case", spec.case), ("norm", spec.norm), ("scaling", spec.scaling))
             if v != {"case": "worst", "norm": "l2", "scaling": "elementwise"}[k]}
    if wrong:
        shown = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
        raise SharpnessError(
            f"geometry={spec.geometry!r} is defined for case 'worst', norm 'l2', scaling 'elementwise' only; "
            f"got {shown} (e.g. 'worst-l2-elementwise:rho={_format(spec.rho)},geometry={spec.geometry}')"
        )


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SharpnessError(f"{name} must be a real number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise SharpnessError(f"{name} must be finite, got {value!r}")
    return out


def _positive_float(name: str, value: object) -> float:
    out = _real(name, value)
    if out <= 0:
        raise SharpnessError(f"{name} must be > 0, got {value!r}")
    return out


def _nonnegative_float(name: str, value: object) -> float:
    out = _real(name, value)
    if out < 0:
        raise SharpnessError(f"{name} must be >= 0, got {value!r}")
    return out


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SharpnessError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise SharpnessError(f"{name} must be >= {minimum}, got {value!r}")


# ------------------------------------------------------------- string form
def _format(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    return json.dumps(text) if isinstance(value, str) and _QUOTE_NEEDED.search(text) else text


def _split_pairs(tail: str, text: str) -> list[tuple[str, str]]:
    """Split ``k=v,k="quoted, value"`` into pairs, honouring JSON quotes."""
    pairs, i = [], 0
    while i < len(tail):
        eq = tail.find("=", i)
        if eq < 0:
            raise SharpnessError(f"expected key=value at {tail[i:]!r} in {text!r}")
        key = tail[i:eq].strip()
        j = eq + 1
        if tail[j : j + 1] == '"':
            value, j = _quoted(tail, j, key, text)
            raw = json.dumps(value)
        else:
            end = tail.find(",", j)
            j = len(tail) if end < 0 else end
            raw = tail[eq + 1 : j].strip()
        pairs.append((key, raw))
        if j < len(tail) and tail[j] != ",":
            raise SharpnessError(f"expected ',' after {key}=... in {text!r}")
        i = j + 1
    return pairs


def _quoted(tail: str, start: int, key: str, text: str) -> tuple[str, int]:
    """A quoted value at ``tail[start]`` and where it ends: JSON (as the canonical form writes it), else the
    characters up to the next quote as typed, so that a regular expression's backslashes need no doubling
    (``params="^(fc|head)\\."``)."""
    try:
        value, end = json.JSONDecoder().raw_decode(tail, start)
        return str(value), end
    except json.JSONDecodeError:
        close = tail.find('"', start + 1)
        if close < 0:
            raise SharpnessError(f"unterminated quote in the value of {key} in {text!r}") from None
        return tail[start + 1 : close], close + 1


def _parse_value(key: str, raw: str, annotation: str, text: str) -> Any:
    try:
        if annotation == "float":
            return float(raw)
        if annotation == "int":
            return int(raw)
        if annotation == "bool":
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        return json.loads(raw) if raw.startswith('"') else raw
    except ValueError:
        raise SharpnessError(f"bad value {raw!r} for {key} in {text!r}") from None
