"""Checks for the exercises: ``check_<exercise>(fn)`` calls the student's ``fn`` on cases it builds.

A check returns quietly after printing one ✓ line when ``fn`` is right. Otherwise it raises
:class:`CheckFailed` with a message that says what is wrong (expected shape vs got, wrong sign,
gradient not flowing, off by a factor of 2, ...). A crash inside ``fn`` is reported the same way,
naming the original error. Checks test properties and closed forms, so every correct way of
writing a function passes, and none changes the caller's random numbers (:func:`core.check`).

One module per notebook (``nb00`` ... ``nb08``) around ``core`` (the failure, the catalogue of known
mistakes, the guards, the partial-credit record :data:`PASSED`) and ``fakes`` (the stand-in networks and
optimizer of the step checks). The grader (``labsupport.grading``) finds the check of exercise ``id``
here as ``check_<id>``.
"""

from . import core, fakes, nb00, nb01, nb02, nb02_conv, nb02_denoise, nb03, nb03_model, nb03_step, nb04, nb04_model, nb05, nb05_model, nb06, nb06_debias, nb06_uses, nb07, nb08, nb08_sampler, nb09, nb09_model
from .core import PASSED, CheckFailed, call, check, close, describe, expect_tensor, named, passed, ratio_hint, stage
from .nb00 import check_normalize_images
from .nb01 import check_fit_class_gaussians, check_log_marginal, check_pca, check_sample_classes
from .nb02 import check_ae_train_step, check_Autoencoder
from .nb02_conv import check_ConvAutoencoder
from .nb02_denoise import check_denoising_step
from .nb03 import check_kl_divergence, check_negative_elbo, check_reparameterize, check_vae_loss
from .nb03_model import check_iw_nll, check_VAE
from .nb03_step import check_vae_train_step
from .nb04 import check_conv_out, check_conv_transpose_out, check_discriminator_loss, check_gan_step, check_generator_loss
from .nb04_model import check_Discriminator, check_Generator
from .nb05 import check_critic_loss, check_gradient_penalty, check_wgan_gp_step
from .nb05_model import check_ConditionalDiscriminator, check_ConditionalGenerator, check_cyclegan_g_step
from .nb06 import check_auroc
from .nb06_debias import check_db_vae_loss, check_resampling_weights
from .nb06_uses import check_impute
from .nb07 import check_attribute_direction, check_nearest_neighbours, check_slerp
from .nb08 import check_ddpm_step, check_diffusion_loss, check_q_sample
from .nb08_sampler import check_ddim_step, check_guided_eps, check_sample
from .nb09 import check_euler_sample, check_flow_matching_loss, check_guided_velocity, check_heun_step
from .nb09_model import check_VelocityMLP

__all__ = [
    "PASSED",
    "CheckFailed",
    "call",
    "check",
    "close",
    "describe",
    "expect_tensor",
    "named",
    "passed",
    "ratio_hint",
    "stage",
    "check_normalize_images",
    "check_pca",
    "check_fit_class_gaussians",
    "check_log_marginal",
    "check_sample_classes",
    "check_ae_train_step",
    "check_Autoencoder",
    "check_ConvAutoencoder",
    "check_denoising_step",
    "check_kl_divergence",
    "check_negative_elbo",
    "check_reparameterize",
    "check_vae_loss",
    "check_vae_train_step",
    "check_VAE",
    "check_iw_nll",
    "check_conv_out",
    "check_conv_transpose_out",
    "check_discriminator_loss",
    "check_gan_step",
    "check_generator_loss",
    "check_Generator",
    "check_Discriminator",
    "check_critic_loss",
    "check_gradient_penalty",
    "check_wgan_gp_step",
    "check_ConditionalGenerator",
    "check_ConditionalDiscriminator",
    "check_cyclegan_g_step",
    "check_auroc",
    "check_db_vae_loss",
    "check_resampling_weights",
    "check_impute",
    "check_slerp",
    "check_attribute_direction",
    "check_nearest_neighbours",
    "check_ddpm_step",
    "check_diffusion_loss",
    "check_q_sample",
    "check_ddim_step",
    "check_guided_eps",
    "check_sample",
    "check_euler_sample",
    "check_flow_matching_loss",
    "check_heun_step",
    "check_VelocityMLP",
    "check_guided_velocity",
]
MODULES = (core, fakes, nb00, nb01, nb02, nb02_conv, nb02_denoise, nb03, nb03_model, nb03_step, nb04, nb04_model, nb05, nb05_model, nb06, nb06_debias, nb06_uses, nb07, nb08, nb08_sampler, nb09, nb09_model)  # every module of the package (the grader watches them all)
