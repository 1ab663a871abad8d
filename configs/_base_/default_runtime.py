# Runtime shared by the ImageNet classification configs (mmpretrain).
default_scope = 'mmpretrain'
custom_imports = dict(imports=['vitzoo.models'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # vitzoo's: atomic writes (a SIGKILL never costs the last checkpoint) and exact resume.
    checkpoint=dict(type='vitzoo.CheckpointHook', interval=1, max_keep_ckpts=3),
    # A NaN/Inf loss stops the run before it is applied; action='skip' skips such steps instead.
    non_finite_loss=dict(type='vitzoo.NonFiniteLossHook', action='stop'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=None, deterministic=False)
