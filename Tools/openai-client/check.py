"""The real `openai` Python client against charrnn-server's completions API.

    python3 Tools/openai-client/check.py --checkpoint runs/gpl [--server .build/debug/charrnn-server]
        [--charrnn .build/debug/charrnn]

Starts charrnn-server on a free port, then asks through `openai.OpenAI`'s
`completions.create` (plain, streamed, n = 3, stop strings, logprobs 5, a
list of prompts, echo, and echo with logprobs: the prompt scored as
`charrnn trace` scores it) and `models.list`/`retrieve`, and checks every text
against what `charrnn sample` prints for the same seed and options (a token
is a character; choice i of a prompt is `charrnn sample --count n`'s sample
i), the log-probabilities against `charrnn sample --logprobs`, and that bad
requests raise the client's own exceptions. Exits non-zero, naming the case,
on the first difference.
"""

import argparse
import json
import os
import subprocess
import sys

import openai


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--server", default=".build/debug/charrnn-server")
    parser.add_argument("--charrnn", default=".build/debug/charrnn")
    args = parser.parse_args()

    def sample(prompt, length, seed, *flags):
        """charrnn sample's samples for these options: [(text, finish_reason, [logprob lines])]."""
        out = subprocess.run(
            [args.charrnn, "sample", "--checkpoint", args.checkpoint, "--prime", prompt, "--length", str(length),
             "--seed", str(seed), "--logprobs", "5", *([] if "--top-k" in flags else ["--no-top-k"]), *flags],
            check=True, capture_output=True, text=True).stdout
        samples, lines = [], []
        for line in out.splitlines():
            record = json.loads(line)
            if "finish_reason" in record:
                samples.append((record["text"], record["finish_reason"], lines))
                lines = []
            else:
                lines.append(record)
        return samples

    server = subprocess.Popen(
        [args.server, "--checkpoint", args.checkpoint, "--port", "0", "--model-name", "charrnn-test"],
        stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        address = line.split("listening on ")[1].split("/ ")[0]
        client = openai.OpenAI(base_url=address + "/v1", api_key="none", max_retries=0)
        checks = 0

        def expect(condition, what):
            nonlocal checks
            if not condition:
                sys.exit(f"openai client check failed: {what}")
            checks += 1

        models = client.models.list()
        expect([m.id for m in models.data] == ["charrnn-test"], f"models.list: {models}")
        expect(client.models.retrieve("charrnn-test").id == "charrnn-test", "models.retrieve")

        # Plain.
        (text, _, _), = sample("The ", 200, 7)
        answer = client.completions.create(model="charrnn-test", prompt="The ", max_tokens=200, seed=7)
        expect(answer.choices[0].text == text, f"plain text: {answer.choices[0].text!r} != {text!r}")
        expect(answer.choices[0].finish_reason == "length", "plain finish_reason")
        expect(answer.usage.prompt_tokens == 4 and answer.usage.completion_tokens == 200
               and answer.usage.total_tokens == 204, f"usage {answer.usage}")
        expect(answer.object == "text_completion" and answer.model == "charrnn-test", "object and model")

        # Streamed, with usage at the end.
        pieces, finish, usage = [], None, None
        for chunk in client.completions.create(model="charrnn-test", prompt="The ", max_tokens=200, seed=7, stream=True,
                                               stream_options={"include_usage": True}):
            for choice in chunk.choices:
                pieces.append(choice.text)
                finish = choice.finish_reason or finish
            usage = chunk.usage or usage
        expect("".join(pieces) == text, "streamed text")
        expect(finish == "length" and usage.completion_tokens == 200, f"streamed end: {finish}, {usage}")

        # n = 3: charrnn sample --count 3's samples, in order.
        samples = sample("An", 150, 11, "--count", "3")
        answer = client.completions.create(model="charrnn-test", prompt="An", max_tokens=150, seed=11, n=3,
                                           temperature=0.8)
        samples_at_08 = sample("An", 150, 11, "--count", "3", "--temperature", "0.8")
        expect([c.text for c in answer.choices] == [s[0] for s in samples_at_08], "n = 3 texts")
        expect([c.index for c in answer.choices] == [0, 1, 2], "n = 3 indices")
        expect(len({s[0] for s in samples}) == 3, "three different samples")

        # Stop strings: cut before the first, finish_reason stop.
        stop = text[100:103]
        (stopped, reason, _), = sample("The ", 200, 7, "--stop", stop, "--stop", "\u2603")
        answer = client.completions.create(model="charrnn-test", prompt="The ", max_tokens=200, seed=7,
                                           stop=[stop, "\u2603"])
        expect(reason == "stop" and answer.choices[0].text == stopped and answer.choices[0].finish_reason == "stop",
               f"stop: {answer.choices[0].text!r} != {stopped!r}")
        streamed = client.completions.create(model="charrnn-test", prompt="The ", max_tokens=200, seed=7, stop=stop,
                                             stream=True)
        chunks = list(streamed)
        expect("".join(c.choices[0].text for c in chunks) == stopped, "streamed stop text")
        expect(chunks[-1].choices[0].finish_reason == "stop", "streamed stop finish_reason")

        # logprobs 5: each character's, and the five likeliest, as charrnn sample --logprobs 5 gives them.
        (text, _, lines), = sample("The ", 60, 3, "--top-k", "5")
        answer = client.completions.create(model="charrnn-test", prompt="The ", max_tokens=60, seed=3, logprobs=5,
                                           extra_body={"top_k": 5})
        logprobs = answer.choices[0].logprobs
        expect(answer.choices[0].text == text, "logprobs text (top_k 5 as an extension field)")
        expect(logprobs.tokens == [line["char"] for line in lines], "logprobs tokens")
        expect(all(abs(a - line["logprob"]) < 1e-5 for a, line in zip(logprobs.token_logprobs, lines)), "token_logprobs")
        expect(all(set(top) == {t["char"] for t in line["top_logprobs"]} and len(top) == 5
                   for top, line in zip(logprobs.top_logprobs, lines)), "top_logprobs")
        expect(logprobs.text_offset == list(range(60)), "text_offset")

        # A list of prompts: n choices each, prompt by prompt.
        answer = client.completions.create(model="charrnn-test", prompt=["The ", "An"], max_tokens=50, seed=5, n=2)
        expected = [s[0] for s in sample("The ", 50, 5, "--count", "2")] + [s[0] for s in sample("An", 50, 5, "--count", "2")]
        expect([c.text for c in answer.choices] == expected, "a list of prompts")
        expect(answer.usage.prompt_tokens == 6 and answer.usage.completion_tokens == 200, f"usage {answer.usage}")

        # echo: the prompt first.
        answer = client.completions.create(model="charrnn-test", prompt="The ", max_tokens=200, seed=7, echo=True)
        (text, _, _), = sample("The ", 200, 7)
        expect(answer.choices[0].text == "The " + text, "echo")

        # echo with logprobs: the prompt's characters first, as `charrnn trace` scores them (the
        # first has nothing before it), then the generated ones as `charrnn sample --logprobs`.
        def traced(prompt):
            out = subprocess.run([args.charrnn, "trace", "--checkpoint", args.checkpoint, "--prime", prompt, "--top", "5"],
                                 check=True, capture_output=True, text=True).stdout
            return [json.loads(line) for line in out.splitlines()]

        def matches_trace(logprobs, scored, what):
            count = len(scored)
            expect(logprobs.tokens[:count] == [line["character"] for line in scored], f"{what}: prompt tokens")
            expect(logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None, f"{what}: the first character")
            expect(all(abs(value + line["surprise"]) <= 1e-9 * line["surprise"]
                       for value, line in zip(logprobs.token_logprobs[1:count], scored[1:])), f"{what}: prompt token_logprobs")
            expect(all(set(top) == {t["character"] for t in line["top"]}
                       for top, line in zip(logprobs.top_logprobs[1:count], scored[1:])), f"{what}: prompt top_logprobs")

        # Scoring a text, as evaluation harnesses do: max_tokens 0.
        prompt = "The Program is distributed"
        answer = client.completions.create(model="charrnn-test", prompt=prompt, max_tokens=0, echo=True, logprobs=5)
        expect(answer.choices[0].text == prompt and answer.usage.completion_tokens == 0, "scoring: the prompt alone")
        matches_trace(answer.choices[0].logprobs, traced(prompt), "scoring")
        expect(answer.choices[0].logprobs.text_offset == list(range(len(prompt))), "scoring: text_offset")
        (text, _, lines), = sample("The ", 60, 3, "--top-k", "5")
        answer = client.completions.create(model="charrnn-test", prompt="The ", max_tokens=60, seed=3, logprobs=5, echo=True,
                                           extra_body={"top_k": 5})
        logprobs = answer.choices[0].logprobs
        expect(answer.choices[0].text == "The " + text, "echo with logprobs: text")
        matches_trace(logprobs, traced("The "), "echo with logprobs")
        expect(logprobs.tokens[4:] == [line["char"] for line in lines], "echo with logprobs: generated tokens")
        expect(all(abs(a - line["logprob"]) < 1e-5 for a, line in zip(logprobs.token_logprobs[4:], lines)),
               "echo with logprobs: generated token_logprobs")
        expect(logprobs.text_offset == list(range(64)), "echo with logprobs: text_offset")

        # Bad requests raise the client's exceptions, naming the parameter.
        for kwargs, error, param in [
            ({"temperature": -1}, openai.BadRequestError, "temperature"),
            ({"max_tokens": -1}, openai.BadRequestError, "max_tokens"),
            ({"logprobs": 1000}, openai.BadRequestError, "logprobs"),
            ({"stop": [""]}, openai.BadRequestError, "stop"),
            ({"presence_penalty": 1.0}, openai.BadRequestError, "presence_penalty"),
            ({"prompt": "\u2603"}, openai.BadRequestError, "prompt"),
            ({"model": "gpt-3.5-turbo-instruct"}, openai.NotFoundError, "model"),
        ]:
            request = {"model": "charrnn-test", "prompt": "The ", "max_tokens": 5, **kwargs}
            try:
                client.completions.create(**request)
                expect(False, f"{kwargs} was accepted")
            except error as failure:
                body = failure.body if isinstance(failure.body, dict) else {}
                expect(body.get("param") == param and body.get("message"), f"{kwargs}: {failure.body}")
        print(f"openai {openai.__version__} client against charrnn-server: {checks} checks passed")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
