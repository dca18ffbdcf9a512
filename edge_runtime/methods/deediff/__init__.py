"""DeeDiff (Tang et al., arXiv 2309.17074) on the device: a diffusion bundle sampled with per-step, per-sample
layer exits (the ``sample`` mode, :meth:`edge_runtime.runtime.Runtime.sample`, ``edge-runtime sample``).

- :mod:`.schedule`: the DDPM noise schedule and the DDIM update (numpy; the workstation trains with it too).
- :mod:`.policy`: the ``uncertainty`` exit policy (leave when the UEM's ``u`` is below the threshold).
- :mod:`.sampler`: the DDIM loop calling the executor once per step on the whole batch.
- :mod:`.mode`: the ``sample`` mode, its daemon requests and its command.
- :mod:`.quality`: FID in the bundle's digits classifier's feature space, class accuracy, per-sample MSE.
- :mod:`.grid`: PNG grids of samples.
"""

from edge_runtime.methods.deediff import mode, policy  # noqa: F401  (register the mode and the policy)
from edge_runtime.methods.deediff.policy import UncertaintyPolicy
from edge_runtime.methods.deediff.sampler import DiffusionSampler, SampleResult, starting_noise
from edge_runtime.methods.deediff.schedule import NoiseSchedule, ddim_step, ddim_timesteps

__all__ = ["DiffusionSampler", "NoiseSchedule", "SampleResult", "UncertaintyPolicy", "ddim_step", "ddim_timesteps",
           "starting_noise"]
