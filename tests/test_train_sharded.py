"""One training step on a ('data'=4, 'model'=2) mesh of 8 fake CPU devices equals the step on one device.

Runs in its own process: the device count is fixed when jax starts.
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json
    import jax
    import numpy as np
    jax.config.update("jax_default_matmul_precision", "highest")
    from polar_jax import sharding, train
    from polar_jax.predictor.model import PredictorConfig

    assert jax.device_count() == 8, jax.devices()
    config = train.default_config().train
    # Adam's first step is ~ lr * sign(g). Some gradients are zero in exact arithmetic (attention key
    # biases cannot change a softmax), so their sign is rounding noise that differs with the reduction
    # order; a larger eps keeps the update a smooth function of the gradient, which is what we compare.
    config.update(learning_rate=1e-3, warmup_steps=0, adam_eps=1e-3)
    predictor = PredictorConfig(depth=8, d_model=32, num_heads=4, num_blocks=1)  # dropout 0.1 stays on
    rng = np.random.default_rng(0)
    b, s, f, d = 8, 16, 24, 8
    batch = {
        "features": rng.normal(size=(b, s, f)).astype(np.float32),
        "mask": np.arange(s)[None] < rng.integers(3, s, (b, 1)),
        "boundaries": np.where(np.arange(d) > 0, rng.integers(0, 2, (b, d)), 0).astype(np.int32),
        "op_labels": np.where(rng.random((b, d)) < .5, rng.integers(0, 3, (b, d)), -100).astype(np.int32),
        "weight": rng.random(b).astype(np.float32),
        "length": rng.integers(1, 16, b).astype(np.int32),
        "valid": np.arange(b) < 7,  # one padded row
    }
    batch["op_labels"][:, 0] = 1
    runs = {}
    for name, mesh, rules in [
        ("one", sharding.create_mesh(1, jax.devices()[:1]), sharding.ShardingRules.replicated()),
        ("eight", sharding.create_mesh(2), sharding.ShardingRules.fsdp())]:
      setup = train.build_training(predictor, f, config, 10, mesh, rules)
      state = setup.init(jax.random.PRNGKey(0))
      spec = str(state["params"]["block_0"]["mlp_in"]["kernel"].sharding.spec)
      mu_spec = str(jax.tree.leaves(state["opt_state"])[1].sharding.spec)
      init = jax.device_get(state["params"])
      state, metrics = setup.step(state, train.to_device(batch, setup.batch_sharding))
      runs[name] = dict(init=init, params=jax.device_get(state["params"]), loss=float(metrics["loss"]),
                        grad_norm=float(metrics["grad_norm"]), spec=spec, mu_spec=mu_spec,
                        shape=dict(setup.mesh.shape))
    diff = lambda key: max(float(np.abs(x - y).max()) for x, y in
                           zip(jax.tree.leaves(runs["one"][key]), jax.tree.leaves(runs["eight"][key])))
    print("RESULT " + json.dumps({
        "init_diff": diff("init"), "param_diff": diff("params"),
        "loss": [runs["one"]["loss"], runs["eight"]["loss"]],
        "grad_norm": [runs["one"]["grad_norm"], runs["eight"]["grad_norm"]],
        "spec": runs["eight"]["spec"], "mu_spec": runs["eight"]["mu_spec"], "shape": runs["eight"]["shape"],
        "changed": diff("init") < 1e-12 and float(np.abs(runs["eight"]["init"]["op_head"]["kernel"]
                                                         - runs["eight"]["params"]["op_head"]["kernel"]).max()) > 1e-5,
    }))
""")


def test_one_step_on_eight_devices_equals_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
  assert result["shape"] == {"data": 4, "model": 2}
  assert result["spec"] == "P('data', 'model')"  # mlp_in kernel: FSDP on embed, TP on mlp
  assert "data" in result["mu_spec"] or "model" in result["mu_spec"]  # optimizer state sharded like params
  assert result["init_diff"] == 0.0
  assert abs(result["loss"][0] - result["loss"][1]) <= 1e-5
  assert abs(result["grad_norm"][0] - result["grad_norm"][1]) <= 1e-5 * max(1.0, result["grad_norm"][0])
  assert result["param_diff"] <= 1e-5
  assert result["changed"]  # the step moved the parameters
