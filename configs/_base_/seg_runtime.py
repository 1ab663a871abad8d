# Runtime of the semantic segmentation configs (mmsegmentation 1.x, iteration-based): the shared
# runtime with mmseg's scope, iteration-based logging and checkpoints, and mmseg's visualizer.
_base_ = './default_runtime.py'
default_scope = 'mmseg'
default_hooks = dict(
    logger=dict(interval=50, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=16000),
    visualization=dict(_delete_=True, type='SegVisualizationHook'),
)
env_cfg = dict(cudnn_benchmark=True)
visualizer = dict(type='SegLocalVisualizer', name='visualizer')
log_processor = dict(by_epoch=False)
tta_model = dict(type='SegTTAModel')
