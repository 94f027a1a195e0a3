"""Every registered rule against its secagg declaration (docs/architecture.md: enforced in code)."""
import pytest
import torch

from protocols.rules import RULES, make_rule
from secagg import ClientUpdates, QuantizedOracle, SecureAggregationViolation


def _updates(secure):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 30, generator=g) * 0.1
    # FLTrust needs the server's root update; other rules ignore the context.
    return ClientUpdates(x, oracle=QuantizedOracle(clip=1.0), secure=secure, rule="x",
                         num_samples=torch.arange(1, 13).float(), context={"server_update": x.mean(0)})


@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_honours_its_secagg_declaration(name):
    rule = make_rule(name)
    handle = _updates(secure=True)
    handle.rule = name
    if rule.secagg_compatible:
        out = rule(handle)
        assert out.shape == (30,) and torch.isfinite(out).all()
        assert handle.transcript.summary()["individual_reveals"] == 0
    else:
        with pytest.raises(SecureAggregationViolation, match=name):
            rule(handle)
    # Without secure aggregation every rule runs.
    assert rule(_updates(secure=False)).shape == (30,)


def test_fedavg_weights_by_sample_count():
    h = _updates(secure=False)
    x = h.reveal()
    w = torch.arange(1, 13).float()
    assert torch.allclose(make_rule("fedavg")(_updates(False)), (w[:, None] * x).sum(0) / w.sum(), atol=1e-6)


def test_unknown_parameter_is_named():
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['f'\]"):
        make_rule("fedavg", f=2)
