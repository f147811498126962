"""The MLflow pyfunc model every registered driftloop version is: a causal LM that completes prompts.

This file is logged as MLflow "model from code": MLflow copies it into each model and runs it
on load, so it imports only mlflow, pandas, torch and transformers (never driftloop). The
Hugging Face folder travels as the model's `hf` artifact; the prompt template comes from the
model config. Input: a DataFrame with a `prompt` column; output: one completion per prompt.

    >>> m = mlflow.pyfunc.load_model("models:/driftloop-model@champion")
    >>> m.predict(pd.DataFrame({"prompt": ["How do I reset my password?"]}), params={"max_new_tokens": 24})
    ['Open Settings, then ...']
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

TEMPLATE = "Q: {prompt}\nA:"  # the training default (retrain.params.TrainingParams.prompt_template)


class TextGenerator(PythonModel):
    """Greedy (or sampled, with `temperature` > 0) completion of each prompt, decoded to text."""

    def load_context(self, context) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = context.artifacts["hf"]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path)
        self.model.eval()
        self.template = (context.model_config or {}).get("prompt_template", TEMPLATE)

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> list[str]:
        import torch

        params = params or {}
        max_new = int(params.get("max_new_tokens", 64))
        temperature = float(params.get("temperature", 0.0))
        prompts = list(model_input["prompt"]) if hasattr(model_input, "columns") else list(model_input)
        eos = self.tokenizer.eos_token_id
        out = []
        for prompt in prompts:
            ids = self.tokenizer(self.template.replace("{prompt}", str(prompt)), return_tensors="pt").input_ids
            with torch.no_grad():
                gen = self.model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_new,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    pad_token_id=eos,
                    eos_token_id=eos,
                )
            out.append(self.tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True).strip())
        return out


mlflow.models.set_model(TextGenerator())
