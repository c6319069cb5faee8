"""mmengine integration: the runner helpers of tools/ and (later) DAQHook."""
