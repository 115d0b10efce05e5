"""PPO on a Ray cluster: rollout workers (policy copy + reference + scorer) and a learner.

``config.DistributedConfig`` says where PPO runs; ``runner.RayPPO`` is the distributed
counterpart of ``rl.ppo.PPOTrainer`` (same metrics, samples and checkpoints);
``device`` picks CUDA + bf16 autocast when available. Ray is optional
(``pip install 'alignkit[ray]'``) and imported only when the Ray backend is used.
"""
