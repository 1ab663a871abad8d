# Runtime of the detection / panoptic segmentation configs (mmdetection 3.x, epoch-based): the
# shared runtime with mmdet's scope and visualizer.
_base_ = './default_runtime.py'
default_scope = 'mmdet'
default_hooks = dict(
    logger=dict(interval=50),
    visualization=dict(_delete_=True, type='DetVisualizationHook'),
)
visualizer = dict(type='DetLocalVisualizer', name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
