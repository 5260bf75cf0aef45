# tests/data/chat_template_reference.py -- renders a chat template with Jinja2 as transformers does
# (trim_blocks, lstrip_blocks, loopcontrols, raise_exception, HF's tojson); the reference for lmforge.
# usage: chat_template_reference.py CASES.tsv, one case a line: TOKENIZER_CONFIG.json MESSAGES.json GEN(0|1) OUT
# (tab-separated). OUT gets the rendered bytes, or "RAISE: <message>" when the template raised.
import json
import sys

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateError(Exception):
    pass


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def render(config_path, messages_path, gen, out_path):
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    with open(messages_path, encoding="utf-8") as f:
        messages = json.load(f)
    tools = None
    if isinstance(messages, dict):
        tools = messages.get("tools")
        messages = messages["messages"]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(config["chat_template"])
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if k in config}
    try:
        text = template.render(messages=messages, tools=tools, documents=None, add_generation_prompt=gen == "1", **special)
    except TemplateError as e:
        text = "RAISE: " + str(e)
    with open(out_path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            if line.strip():
                render(*line.rstrip("\n").split("\t"))


if __name__ == "__main__":
    main()
