from tensorrt_llm.llmapi.args import BuildConfig, KvCacheConfig, QuantAlgo, QuantConfig
from tensorrt_llm.llmapi.llm import LLM, CompletionOutput, RequestOutput
from tensorrt_llm.llmapi.sampling import SamplingParams

__all__ = ["LLM", "CompletionOutput", "RequestOutput", "SamplingParams", "KvCacheConfig",
           "BuildConfig", "QuantConfig", "QuantAlgo"]
