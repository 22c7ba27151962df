"""A layer whose loading kills its own process in sweep job 1: a worker dying as under the OOM killer."""

import os
import signal

import keras


@keras.saving.register_keras_serializable(package="workbench_tests")
class KillerDoubler(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x

    @classmethod
    def from_config(cls, config):
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized() and HydraConfig.get().job.num == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().from_config(config)
