"""The step checks' stand-ins (labsupport/checks/fakes.py): the reporting optimizer, the recording network and its
twin, the step-watching skeleton shared by check_gan_step and check_wgan_gp_step, the result-dict test, and notebook 02's
tiny autoencoder."""

import pytest
import torch

from labsupport.checks import CheckFailed
from labsupport.checks.fakes import RecordingNet, StepSGD, TinyAE, expect_dict, flat, grads, ref_grad, twin, watch_step


def test_step_sgd_reports_each_step_and_steps_like_sgd():
    net = RecordingNet(2, (), 0, seed=0, scale=1.0)
    opt, seen = StepSGD(net.parameters(), lr=0.5), []
    opt.on_step = lambda: seen.append(grads(net))
    before = flat(net.parameters())
    net(torch.ones(3, 2)).sum().backward()
    opt.step()
    assert len(seen) == 1 and torch.allclose(flat(net.parameters()), before - 0.5 * seen[0])
    opt.zero_grad(set_to_none=False)
    assert grads(net).abs().max() == 0
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_recording_net_shapes_records_only_while_watched_and_twin_has_given_weights():
    G, C = RecordingNet(2, (1, 3, 3), 0, seed=1, scale=0.9), RecordingNet(9, (), 3, seed=2, scale=0.9)
    z = torch.randn(4, 2)
    assert G(z).shape == (4, 1, 3, 3) and C(G(z)).shape == (4,) and not G.inputs
    G.events = ["x"]
    G(z)
    assert len(G.inputs) == 1 and G.inputs[0][0] == 1 and torch.equal(G.inputs[0][1], z)
    zero = twin(G, torch.zeros_like(flat(G.parameters())))
    assert zero.events is None and not zero.inputs and zero(z).abs().max() == 0
    assert torch.equal(RecordingNet(2, (2,), 0, seed=1, scale=0.8)(z), RecordingNet(2, (2,), 0, seed=1, scale=0.8)(z))


def test_ref_grad_is_the_gradient_at_the_given_weights():
    net = RecordingNet(2, (), 0, seed=0, scale=1.0)
    x = torch.randn(5, 2)
    params = flat(net.parameters()) + 1.0
    want = torch.cat([x.sum(0), torch.tensor([5.0])]).double()  # d/dw, d/db of sum(w . x + b)
    assert torch.allclose(ref_grad(net, params, lambda n: n(x).sum()), want)
    assert torch.equal(flat(net.parameters()) + 1.0, params)  # the net itself is untouched


def test_watch_step_records_the_steps_in_order_and_the_generators_gradients():
    G, D = RecordingNet(2, (2,), 0, seed=1, scale=0.8), RecordingNet(2, (), 0, seed=2, scale=0.8)
    opt_g, opt_d = StepSGD(G.parameters(), lr=0.1), StepSGD(D.parameters(), lr=0.1)

    def step(G, D, opt_g, opt_d, z):
        D(G(z).detach()).mean().backward()
        opt_d.step()
        (-D(G(z)).mean()).backward()
        opt_g.step()
        return {"ok": 1}

    out, events = watch_step(step, G, D, opt_g, opt_d, "d", None, torch.randn(3, 2))
    assert out == {"ok": 1} and [e[:2] for e in events if e[0] == "step"] == [("step", "d"), ("step", "g")]
    first_g = next(i for i, e in enumerate(events) if e[0] == "g_grad")
    assert first_g > next(i for i, e in enumerate(events) if e[0] == "step")  # G's gradients came in the G step only
    assert G.events is None and opt_g.on_step is None and len(G.inputs) == 2


def test_expect_dict_names_what_is_missing():
    expect_dict({"a": 1, "b": 2}, ("a", "b"), "step", " (call 1)")
    with pytest.raises(CheckFailed, match=r"step should return a dict with keys \['a', 'b'\], but it returned \(1, 2\) \(call 1\)"):
        expect_dict((1, 2), ("a", "b"), "step", " (call 1)")
    with pytest.raises(CheckFailed, match=r"lacks the key\(s\) \['b'\]: return \{'a': \.\.\., 'b': \.\.\.\} \(got keys \['a'\]\)"):
        expect_dict({"a": 1}, ("a", "b"), "step", "")


def test_tiny_autoencoder_is_seeded_and_decodes_its_codes_to_images():
    x = torch.rand(3, 1, 28, 28)
    ae = TinyAE(0)
    z = ae.encode(x)
    assert z.shape == (3, 4) and torch.equal(ae(x), ae.decode(z)) and ae(x).shape == (3, 1, 28, 28)
    assert 0 <= ae(x).min() and ae(x).max() <= 1
    assert torch.equal(flat(TinyAE(0).parameters()), flat(ae.parameters())) and not torch.equal(flat(TinyAE(1).parameters()), flat(ae.parameters()))
