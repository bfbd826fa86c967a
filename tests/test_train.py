import pytest
import torch

from labsupport import config, train, train_core, train_diffusion, train_gan


@pytest.mark.parametrize("cuda, mps, best", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, best):
    monkeypatch.delenv("LABSUPPORT_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert config.get_device() == torch.device(best)
    assert config.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LABSUPPORT_DEVICE", "cpu")  # the environment overrides the best device
    assert config.get_device() == torch.device("cpu")


def test_one_device_rule(monkeypatch):
    """None: the model's device, or the best one without a model; a string goes through get_device."""
    monkeypatch.delenv("LABSUPPORT_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    model = torch.nn.Linear(2, 2)
    assert config.resolve_device(None, model) == torch.device("cpu")
    assert config.resolve_device(None, torch.nn.ReLU()) == config.get_device()  # no parameters: the best device
    assert config.resolve_device("cpu", model) == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        config.resolve_device("cuda", model)
    with pytest.raises(ValueError, match="Use 'cpu'"):
        config.resolve_device("gpu")


@pytest.mark.parametrize("call", [
    lambda: train.train_gan(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1), lambda b: torch.randn(b, 2), steps=1, device="gpu"),
    lambda: train.train_vae(torch.nn.Linear(2, 2), torch.rand(4, 1, 28, 28), epochs=1, device="gpu"),
    lambda: train.fit(torch.nn.Linear(2, 2), lambda m, b: m(b).sum(), [torch.randn(2, 2)], device="gpu"),
    lambda: train.toy_gan("gan", torch.randn(10, 2), steps=1, device="gpu"),
])
def test_every_loop_validates_its_device(call):
    with pytest.raises(ValueError, match="Unknown device 'gpu'"):
        call()


@pytest.mark.parametrize("bad", ["gpu", "cuda:banana", "tpu"])
def test_unknown_device_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="Use 'cpu', 'cuda'"):
        config.get_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        config.get_device("cuda")


def test_seed_everything_repeats():
    config.seed_everything(3)
    a = torch.randn(5)
    config.seed_everything(3)
    assert torch.equal(a, torch.randn(5))


def test_config_pick(monkeypatch):
    monkeypatch.setattr(config, "FAST", True)
    assert config.pick(normal=10, fast=1) == 1
    monkeypatch.setattr(config, "FAST", False)
    assert config.pick(normal=10, fast=1) == 10
    monkeypatch.setenv("LABSUPPORT_THREADS", "3")
    assert config.num_threads() == 3


def test_every_loop_has_the_one_nan_guard():
    """train.run_steps is the only step loop: CycleGAN (which once had no guard) and M2 stop with the same message as fit."""
    from labsupport import models
    nets = [models.CycleGenerator(1, 1, width=2), models.CycleGenerator(1, 1, width=2), models.PatchDiscriminator(1, width=2),
            models.PatchDiscriminator(1, width=2)]
    with pytest.raises(FloatingPointError, match=r"^cycle became nan at step 1: lower the learning rate$"):
        train.train_cyclegan(*nets, torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28), steps=2, batch_size=2, device="cpu",
                             cycle_loss=lambda *a: torch.tensor(float("nan"), requires_grad=True))
    assert not any(n.training for n in nets), "eval mode after the loop, error or not"
    model = torch.nn.Linear(1, 1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match=r"^loss became nan at step 1: lower the learning rate$"):
        train.fit(model, lambda m, b: m(b).mean() * float("nan"), [torch.ones(2, 1)], device="cpu")
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters())), "fit takes no step on a NaN loss"


def test_train_reexports_every_trainer_of_its_modules():
    """`from labsupport.train import X` (notebooks, bench, pretrained) finds every loop, the same object as in its own module."""
    for module, names in [(train_core, ["Progress", "run_steps", "cosine_decay", "weight_average", "fit"]),
                          (train_gan, ["frozen", "gan_step", "batch_sampler", "train_gan", "toy_gan", "train_conditional_gan",
                                       "train_cyclegan"]),
                          (train_diffusion, ["train_diffusion"])]:
        for name in names:
            assert getattr(train, name) is getattr(module, name), name
    assert all(hasattr(train, name) for name in train.__all__)
    assert train.gan_d_loss is __import__("labsupport.losses").losses.gan_d_loss  # an alias students may write


@pytest.mark.parametrize("borrow, name", [
    (lambda: train.batch_sampler(torch.zeros(4, 2)), "labsupport.train_gan.batch_sampler"),
    (lambda: train.cosine_decay(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), steps=2), "labsupport.train_core.cosine_decay"),
])
def test_the_graders_watch_names_a_trainer_of_trains_modules(borrow, name):
    """The loops moved out of train.py stay the course's own answers to the grader: a student's code calling one is named."""
    from labsupport import checking, checks

    def student():
        borrow()

    watch = checking.Watch(checks)
    watch.guard(student)()
    assert name in watch.reference, watch.reference
