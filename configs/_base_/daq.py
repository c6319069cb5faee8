# The one file to add to a config's `_base_` list to train it with DAQ INT8 quantization.
# It imports mmdaq (registers DAQHook, the DAQ layers and the compatibility fixes) and adds the
# hook. mmengine refuses a key that two `_base_` files both define: if another base of yours
# already sets `custom_imports` or `custom_hooks`, add 'mmdaq' / `dict(type='DAQHook')` to
# those instead of inheriting this file.
custom_imports = dict(imports=['mmdaq'], allow_failed_imports=False)
custom_hooks = [
    dict(
        type='DAQHook',
        method='daq',  # 'daq' | 'per_channel' | 'per_tensor' | 'ui8' | 'shiftquant'
        keep_first_conv=True,  # the stem sees raw pixels: FP32, as in the paper
        keep_heads_fp32=True,  # final cls/reg/logit layers: FP32
        warmup_iters=0,  # FP32 iterations before INT8 switches on
        stats_interval=50,  # quantization statistics to the logger / TensorBoard
    )
]
