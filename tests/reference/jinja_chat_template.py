#!/usr/bin/env python3
"""Renders chat templates with Jinja2 set up as Hugging Face transformers' apply_chat_template sets it up, the
reference MLNetFinetune's own renderer (src/MLNetFinetune/ChatTemplates) is tested against:

  - an ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and the loopcontrols extension (break/continue),
    plus a {% generation %} block that renders its body (transformers' assistant-mask tracker, without the tracking);
  - a tojson filter that is json.dumps with ensure_ascii=False (Jinja's own escapes HTML characters), taking
    ensure_ascii, indent, separators and sort_keys;
  - globals raise_exception(message) and strftime_now(format);
  - render(messages=..., tools=None, documents=None, add_generation_prompt=..., **special tokens and other variables).

  python3 jinja_chat_template.py < REQUEST_JSON > RESPONSE_JSON
      # {"renders": [{"template", "messages", "add_generation_prompt", "variables"}, ...],
      #  "strftime": [{"format", "time": "2024-07-26T09:05:03"}, ...]}
      # → {"renders": [{"text": ...} or {"error": message, "type": exception class}, ...], "strftime": [text, ...]}

Needs Debian's python3-jinja2; nothing else.
"""
import datetime, json, sys

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox


class Generation(jinja2.ext.Extension):
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.datetime.now().strftime(format)


env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                   extensions=[Generation, jinja2.ext.loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now


def render(case):
    variables = dict(case.get("variables") or {})
    try:
        template = env.from_string(case["template"])
        text = template.render(messages=case["messages"], tools=variables.pop("tools", None),
                               documents=variables.pop("documents", None),
                               add_generation_prompt=case["add_generation_prompt"], **variables)
        return {"text": text}
    except Exception as e:  # the test compares messages, whatever Jinja2 raised
        return {"error": str(e), "type": type(e).__name__}


request = json.load(sys.stdin)
response = {
    "renders": [render(case) for case in request.get("renders", [])],
    "strftime": [datetime.datetime.fromisoformat(c["time"]).strftime(c["format"]) for c in request.get("strftime", [])],
}
json.dump(response, sys.stdout)
