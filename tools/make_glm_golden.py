#!/usr/bin/env python3
"""Golden tokenizer and chat-prompt data for GLM-4-9B-chat and ChatGLM2-6B (tests/fixtures/glm4/).

Regenerate (from the repository root; deterministic, a few seconds):

    /work/pyenv-glm/bin/python tools/make_glm_golden.py

Environment: a venv with the packages of tools/requirements-glm.txt, made with
    python3 -m venv /work/pyenv-glm
    /work/pyenv-glm/bin/pip install -r tools/requirements-glm.txt
Inputs (read-only; not in the repository, see tests/fixtures/glm4/README.md):
    /work/shared/reference/glm-4-9b-chat/tokenizer.model   GLM-4 tiktoken ranks (151,329 lines)
    /work/shared/reference/chatglm3/tokenizer.model        ChatGLM2/3 SentencePiece model
(--shared DIR points elsewhere; the default also tries ../shared relative to the repository.)

What it writes:
  golden_tokens.json    GLM-4 tiktoken ids of ~60 texts: ChatGLM4Tokenizer's plain text encoding
                        (tiktoken encode(text, disallowed_special=()), so special-token text such as
                        "<|user|>" is ordinary text), no [gMASK]<sop> prefix.
  golden_chat.json      GLM-4 chats: messages -> the prompt text rendered by THUDM's Jinja chat_template
                        (add_generation_prompt=True) and its ids, encoded with the 14 specials recognised,
                        which is what HF `tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                        tokenize=True)` returns for THUDM/glm-4-9b-chat.
  golden_chatglm2.json  ChatGLM2-6B chats: ChatGLMTokenizer.build_prompt(query, history) text and the ids
                        `tokenizer([prompt])` gives: [gMASK] sop + SentencePiece ids.  Plus plain
                        `tokenizer.encode(text)` cases: CodeGeeX2-6B prompts with CodeGeeX2's tokenizer (the
                        ChatGLM2 model with add_dummy_prefix=false, rebuilt here byte for byte) and
                        ChatGLM2 / ChatGLM3-6B-base completion prompts.

Reference behaviour reproduced here (re-typed, with sources; no code copied):
  * THUDM GLM-4 tokenization_chatglm.py, class ChatGLM4Tokenizer: the split regex GLM4_PAT_STR; the
    special tokens GLM4_SPECIALS, numbered from len(mergeable_ranks) = 151329 upward; _tokenize encodes
    with disallowed_special=() (encode_special_tokens=False); get_prefix_tokens = [gMASK] <sop>.
  * The chat_template of THUDM/glm-4-9b-chat's tokenizer_config.json (GLM4_CHAT_TEMPLATE below), taken
    from two independent verbatim copies that agree byte for byte: huggingface/huggingface.js
    packages/ollama-utils/src/chat-template-automap.ts (entry "library/glm4:9b", the template in the
    GGUF converted from THUDM/glm-4-9b-chat) and ShishirPatil/gorilla
    berkeley-function-call-leaderboard/bfcl_eval/model_handler/local_inference/glm.py (which quotes
    the tokenizer_config.json "chat_template" value).  llama.cpp's tests/test-chat-template.cpp only
    carries a shortened copy ("......" in place of the tool texts).
  * It is rendered the way HF transformers does (ImmutableSandboxedEnvironment with trim_blocks=True and
    lstrip_blocks=True, a tojson filter = json.dumps(ensure_ascii=False, ...)): with transformers'
    own render_jinja_template, cross-checked against a plain jinja2 environment set up the same way.
    Note that trim_blocks drops the first "\\n" after a block tag, so a tool is introduced by "\\n## name"
    (one newline), not "\\n\\n## name" as the template text reads.
  * THUDM ChatGLM2-6B tokenization_chatglm.py: SPTokenizer adds [MASK] [gMASK] [sMASK] sop eop after
    the SentencePiece vocabulary (ids 64789..64793); build_prompt; build_inputs_with_special_tokens
    prefixes [gMASK] sop.  ChatGLM2-6B's tokenizer.model is assumed to be the file shipped with
    ChatGLM3-6B (sha256 e7dc4c39...a6f2); see the README.  CodeGeeX2-6B's tokenizer.model is that file with
    normalizer_spec.add_dummy_prefix = false: re-serialised, it has exactly the sha256 (57d9fdbd...812f) of
    the git-lfs pointer of THUDM/codegeex2-6b's tokenizer.model (seen in a public mirror of that repository).

Independent checks (asserted; the run fails if any differs): ids from li-plus/chatglm.cpp's chatglm_test.cpp,
made there with the real checkpoints' tokenizers -- GLM-4 encode_ordinary of llama.cpp's pre-tokenizer check
text and of a code sample, a 3-message GLM-4 chat prompt, four ChatGLM2 prompts and one CodeGeeX2 prompt -- and
shared/reference/chatglm3/golden_tokens.json (61 ChatGLM3 SentencePiece cases).
"""

import argparse
import base64
import hashlib
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ChatGLM4Tokenizer.__init__ (THUDM GLM-4 tokenization_chatglm.py): pat_str
GLM4_PAT_STR = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# ChatGLM4Tokenizer.__init__: special_tokens, ids len(mergeable_ranks) + index
GLM4_SPECIALS = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
                 "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>",
                 "<|begin_of_video|>", "<|end_of_video|>"]
GLM4_N_RANKS = 151329
GLM4_TOKENIZER_SHA256 = "5a493598071550244b2ee7f26118f3edec2150b9dfa967929a99052ac83fe716"

# THUDM/glm-4-9b-chat tokenizer_config.json "chat_template" (sources in the module docstring).
GLM4_CHAT_TEMPLATE = (
    "[gMASK]<sop>{% for item in messages %}{% if item['tools'] is defined %}<|system|>\n你是一个名为 ChatGLM 的人工智能助手。"
    "你是基于智谱AI训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具"
    "{% set tools = item['tools'] %}{% for tool in tools %}{% if tool['type'] == 'function' %}\n\n"
    "## {{ tool['function']['name'] }}\n\n{{ tool['function'] | tojson(indent=4) }}\n"
    "在调用上述函数时，请使用 Json 格式表示调用的参数。{% elif tool['type'] == 'python' %}\n\n## python\n\n"
    "当你向 `python` 发送包含 Python 代码的消息时，该代码将会在一个有状态的 Jupyter notebook 环境中执行。\n"
    "`python` 返回代码执行的输出，或在执行 60 秒后返回超时。\n`/mnt/data` 将会持久化存储你的文件。在此会话中，"
    "`python` 无法访问互联网。不要使用 `python` 进行任何网络请求或者在线 API 调用，这些在线内容的访问将不会成功。"
    "{% elif tool['type'] == 'simple_browser' %}\n\n## simple_browser\n\n你可以使用 `simple_browser` 工具。该工具支持以下函数：\n"
    "`search(query: str, recency_days: int)`：使用搜索引擎进行查询并显示结果，可以使用 `recency_days` 参数控制搜索内容的时效性。\n"
    "`mclick(ids: list[int])`：获取一系列指定 id 的页面内容。每次调用时，须选择3-10个页面。选择多个角度的页面，"
    "同时尽可能选择可信任的信息来源。考虑到部分页面是无法加载的，你也可以多打开一些可能有用的页面而不用担心内容过多。\n"
    "`open_url(url: str)`：打开指定的 URL。\n\n使用 `【{引用 id}†{引用文本}】` 来引用内容。\n\n"
    "操作步骤：1. 使用 `search` 来获得信息列表; 2. 使用 `mclick` 来获取指定 ID 页面的内容; 3. 根据获得的内容进行回复。"
    "在回复中应当引用信息来源。\n 如果用户提供了 URL，也可以用 `open_url` 直接打开页面。\n"
    "如果初次搜索结果没有找到合适的信息，也可以再次使用 `search` 进行搜索。{% elif tool['type'] == 'cogview' %}\n\n"
    "## cogview\n\n如果用户的请求中包含了对图像的描述，你可以使用 `cogview` 来生成图像并展示给用户。"
    "你需要向 `cogview` 发送图像描述，规则：\n- 发送给 `cogview` 的消息必须使用英语。用户的中文描述必须完全翻译为英语。\n"
    "- 应当尽可能详细地描述图像生成的需求，需求描述约 100 英文单词。\n- 保持用户原始描述的意图。不要虚构内容或者没见过的人物。\n"
    "- 如无特殊说明，所在地为中国，持有中国立场并遵循中国社会主义价值观。{% endif %}{% endfor %}{% endif %}"
    "{% if item['content'] %}<|{{ item['role'] }}|>{{ item['metadata'] }}\n{{ item['content'] }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
GLM4_CHAT_TEMPLATE_SHA256 = "27288f957f8364c990a2ce13bf5f8bf86921c4bce467ce698c76dcc69466d821"

# ChatGLM2-6B SPTokenizer special tokens, ids n_words + index
CHATGLM2_SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"]
CHATGLM_SP_SHA256 = "e7dc4c393423b76e4373e5157ddc34803a0189ba96b21ddbb40269d31468a6f2"

# ----------------------------------------------------------------------------- texts

TEXTS = [
    # English prose, contractions (the pattern's contraction branch is case-insensitive)
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged, isn't it? We'll see; they've said I'd go and you're right.",
    "I'M HERE, YOU'RE THERE, WE'LL SEE, HE'D GO, THEY'VE WON, SHE'S OUT.",
    "don't 'quote' rock'n'roll o'clock",
    "ALL CAPS SHOUTING!!! and MiXeD CaSe wOrDs",
    "Don't stop \u2014 keep going\u2026 \u201cquoted\u201d \u2018text\u2019 (parenthetical) [bracketed] {braced}",
    "",
    " ",
    # Chinese prose
    "你好",
    "你好，世界！",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "人工智能是计算机科学的一个分支，它企图了解智能的实质，并生产出一种新的能以人类智能相似的方式做出反应的智能机器。",
    "繁體中文與簡體中文的轉換並不總是一一對應的。",
    "龘靐齉爩 𠀀𪚥 (rare and astral CJK)",
    # mixed
    "我用 Python 3.12 写了一个 GLM-4 推理程序，速度大约 25 tokens/s，比 ChatGLM3 快。",
    "Mixed 中英 text 123 混合，English 和中文 alternate。",
    # code
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n\nprint(fib(10))\n",
    "class Node:\n\tdef __init__(self, value):\n\t\tself.value = value\n\t\tself.next = None\n",
    "fn main() {\n    let v: Vec<u32> = (1..=10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "impl<T: Clone> Stack<T> {\n\tpub fn peek(&self) -> Option<&T> {\n\t\tself.items.last()\n\t}\n}",
    "{\"name\": \"glm-4\", \"layers\": 40, \"rope_ratio\": 500, \"eos\": [151329, 151336, 151338]}",
    "cat /var/log/syslog | grep -i error | awk '{print $5}' | sort | uniq -c | sort -rn | head -n 10",
    "<div class=\"a\">Hi &amp; bye</div>\n<!-- comment -->",
    "## Title\n\n- item 1\n- item 2\n\n**bold** _italic_ `code` > quote",
    # whitespace runs and newlines
    "a  \n\n  b",
    "\n",
    "\n\n\n",
    " \n ",
    "trailing spaces   ",
    "   leading spaces",
    "x                    y",
    "\t\tindented with tabs",
    "tabs\tand\tspaces  mixed \t end",
    "line one\r\nline two\r\n",
    "end with newline and spaces\n   ",
    "non\u00a0breaking\u2009thin\u3000ideographic spaces",
    # numbers
    "1234567",
    "3.14159",
    "2024-06-05 12:34:56",
    "-42, +7, 1e-10, 0x1F, 1,000,000 and 12345678901234567890",
    "\uff11\uff12\uff13 full-width digits and \u2167 \u00b2 \u00bd \u0663",
    # emoji
    "emoji \U0001f44b\U0001f600\U0001f680",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family, \U0001f469\U0001f3fd\u200d\U0001f4bb coder",
    "\U0001f1e8\U0001f1f3\U0001f1fa\U0001f1f8\U0001f1ef\U0001f1f5 flags",
    "\u2764\ufe0f \u2714\ufe0f \u2615 1\ufe0f\u20e3",
    # other scripts
    "こんにちは、世界。カタカナとひらがな、そして漢字。",
    "안녕하세요, 세계! 한국어 텍스트입니다.",
    "مرحبا بالعالم، هذا نص عربي.",
    "Привет, мир! Как дела?",
    "café naïve résumé Ελληνικά",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "e\u0301 combining accent, zero\u200bwidth space",
    # URLs
    "https://github.com/THUDM/GLM-4?tab=readme-ov-file#model-list",
    "mailto:someone@example.com and ftp://ftp.example.org/pub/file.tar.gz",
    # special-token text is ordinary text here
    "<|user|>",
    "[gMASK]<sop><|user|>\n你好<|assistant|>",
    "<|endoftext|> [MASK] <eop>",
    # misc
    "Math: \u2211_{i=1}^{n} x_i\u00b2 \u2264 \u221e, \u03b1+\u03b2=\u03b3",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!???...,,,;;;---",
    "bell\x07 and escape\x1b[0m and nul\x00 bytes",
]

# ----------------------------------------------------------------------------- chats

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "查询指定城市的实时天气",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "城市名称，例如：北京"},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current local time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string", "description": "IANA name, e.g. Asia/Shanghai"}},
            "required": ["tz"],
        },
    },
}

GLM4_CHATS = {
    "single_zh": [
        {"role": "user", "content": "你好"},
    ],
    "single_en": [
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "system_multi_turn": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello, who are you?"},
        {"role": "assistant", "content": "I am GLM-4, an AI assistant. How can I help you today?"},
        {"role": "user", "content": "Tell me a joke about programmers."},
    ],
    "multi_turn_zh_emoji": [
        {"role": "system", "content": "你是一个乐于助人的助手，回答要简洁。"},
        {"role": "user", "content": "你好👋！今天心情不错😀"},
        {"role": "assistant", "content": "你好！很高兴听到你心情不错🎉 有什么可以帮你的吗？"},
        {"role": "user", "content": "推荐一本书📚，最好是科幻小说🚀"},
        {"role": "assistant", "content": "推荐刘慈欣的《三体》🌌，讲述人类与三体文明的接触。"},
        {"role": "user", "content": "谢谢🙏 还有别的吗？"},
    ],
    "whitespace_and_code": [
        {"role": "user", "content": "  Fix this:\n\n```python\ndef f(x):\n\treturn x+1\n```\n"},
        {"role": "assistant", "content": "\n\nHere it is:\n```python\ndef f(x):\n    return x + 1\n```"},
        {"role": "user", "content": "\nThanks!  "},
    ],
    "tool_call": [
        {"role": "system", "content": "", "tools": [WEATHER_TOOL]},
        {"role": "user", "content": "北京今天天气怎么样？"},
        {"role": "assistant", "metadata": "get_weather", "content": "{\"city\": \"北京\"}"},
        {"role": "observation", "content": "{\"city\": \"北京\", \"weather\": \"晴\", \"temperature\": 25, \"humidity\": \"40%\"}"},
    ],
    "tool_call_with_system_text": [
        {"role": "system", "content": "Answer in English.", "tools": [WEATHER_TOOL, TIME_TOOL]},
        {"role": "user", "content": "What time is it in Shanghai?"},
        {"role": "assistant", "metadata": "get_time", "content": "{\"tz\": \"Asia/Shanghai\"}"},
        {"role": "observation", "content": "{\"time\": \"2024-06-05T14:30:00+08:00\"}"},
        {"role": "assistant", "content": "It is 14:30 in Shanghai."},
        {"role": "user", "content": "And the weather there?"},
    ],
}

CHATGLM2_CHATS = {
    "single_zh": ("你好", []),
    "single_en": ("Write a haiku about the sea.", []),
    "three_rounds_zh_emoji": (
        "那晚上睡不着应该怎么办？😴",
        [
            ("你好", "你好👋！我是人工智能助手 ChatGLM2-6B，很高兴见到你，欢迎问我任何问题。"),
            ("最近压力有点大😣", "压力大的时候可以试试深呼吸、散步🚶或者和朋友聊聊天☕，适当休息很重要。"),
        ],
    ),
    "two_rounds": (  # the case of chatglm.cpp's ChatGLM2 test (ids asserted equal)
        "晚上睡不着应该怎么办",
        [("你好", "你好👋！我是人工智能助手 ChatGLM2-6B，很高兴见到你，欢迎问我任何问题。")],
    ),
}
# plain tokenizer.encode(text) = [gMASK] sop + SentencePiece ids (add_special_tokens=True); "codegeex2" = the
# CodeGeeX2-6B tokenizer (same pieces, add_dummy_prefix false), "chatglm2" = ChatGLM2-6B / ChatGLM3-6B(-base)
CHATGLM2_PLAIN = {
    "codegeex2_python": ("codegeex2", "# language: Python\n# write a bubble sort function\n"),
    "codegeex2_rust": ("codegeex2", "// language: Rust\n// 计算斐波那契数列\nfn fib(n: u64) -> u64 {\n"),
    "codegeex2_leading_space": ("codegeex2", "  x = 1\n\tif x:\n"),
    "chatglm2_python": ("chatglm2", "# language: Python\n# write a bubble sort function\n"),
    "base_completion_zh": ("chatglm2", "床前明月光，"),
}


# ----------------------------------------------------------------------------- external cross-checks

# External cross-checks: ids from li-plus/chatglm.cpp chatglm_test.cpp (commit f86777c8, 2024-06-24),
# made there with the real THUDM checkpoints' tokenizers.  Asserted below, not written to the fixtures.
# TEST(Pipeline, ChatGLM4): llama.cpp's convert-hf-to-gguf.py pre-tokenizer check text, encode_ordinary
CHATGLM_CPP_GLM4_CHKTXT = '\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, \'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL'
CHATGLM_CPP_GLM4_CHKTXT_IDS = [
    198, 4710, 14721, 65020, 7847, 1572, 2303, 78043, 10942, 9281, 248, 222, 320, 8251, 8, 26440, 114,
    124564, 9281, 234, 104, 30423, 320, 35495, 98226, 96714, 8, 25442, 227, 11157, 99, 247, 9281, 99, 247,
    220, 18, 220, 100702, 220, 121577, 220, 121577, 18, 220, 121577, 100702, 220, 121577, 121577, 220,
    121577, 121577, 18, 220, 121577, 121577, 100702, 220, 18, 13, 18, 220, 18, 496, 18, 220, 18, 1112, 18,
    220, 20833, 222, 96709, 241, 44002, 233, 20833, 237, 44002, 224, 20833, 244, 20833, 115, 20833, 253,
    44002, 223, 20833, 253, 20833, 95, 96709, 227, 74764, 223, 937, 101446, 98319, 22320, 98538, 118901, 19,
    99082, 16, 98411, 21168, 55088, 52883, 18625, 131040, 13065, 146335, 78377, 3355, 4605, 4605, 13865,
    13865, 73022, 3014, 3014, 28052, 17066, 2928, 26524, 7646, 358, 3003, 1012, 364, 83, 813, 566, 594,
    1052, 11, 364, 787, 498, 2704, 30, 364, 44, 537, 2704, 358, 3278, 1281, 432, 11, 364, 35, 498, 1075,
    1045, 15231, 30, 1205, 6, 42368, 264, 63409, 43]
CHATGLM_CPP_GLM4_CODE = '\n```c++\n#include <iostream>\n\nint main() {\n    printf("hello world\\n");    // say hello\n}\n```\n\n```python\nif __name__ == \'__main__\':\n    print(\'hello world\')        # say hello\n```\n'
CHATGLM_CPP_GLM4_CODE_IDS = [
    198, 73022, 66, 22879, 1067, 366, 9661, 1339, 396, 1887, 368, 341, 262, 4100, 445, 14978, 1879, 1699,
    5038, 262, 442, 1977, 23745, 198, 532, 13865, 19288, 73022, 12663, 198, 333, 1304, 606, 563, 621, 12106,
    3817, 16165, 262, 1173, 492, 14978, 1879, 863, 286, 671, 1977, 23745, 198, 13865, 3989]
# apply_chat_template([user 你好, assistant ..., user 晚上睡不着应该怎么办])
CHATGLM_CPP_GLM4_CHAT3_IDS = [
    151331, 151333, 151336, 198, 109377, 151337, 198, 109377, 9281, 239, 233, 6313, 118295, 103810, 98406,
    3837, 101665, 110368, 99444, 99212, 11314, 151336, 198, 101160, 120410, 99379, 103298, 151337]
# TEST(Pipeline, ChatGLM2): tokenizer.encode(text) = [gMASK] sop + SentencePiece ids
CHATGLM_CPP_CHATGLM2 = [
    ('你好',
     [64790, 64792, 36474, 54591]),
    ('[Round 1]\n\n问：你好\n\n答：',
     [64790, 64792, 790, 30951, 517, 30910, 30939, 30996, 13, 13, 54761, 31211, 39701, 13, 13, 55437,
     31211]),
    ('[Round 1]\n\n问：你好\n\n答：你好👋！我是人工智能助手 ChatGLM2-6B，很高兴见到你，欢迎问我任何问题。\n\n[Round 2]\n\n问：晚上睡不着应该怎么办\n\n答：',
     [64790, 64792, 790, 30951, 517, 30910, 30939, 30996, 13, 13, 54761, 31211, 39701, 13, 13, 55437,
     31211, 39701, 243, 162, 148, 142, 31404, 33030, 34797, 42481, 22011, 10461, 30944, 30943, 30941,
     30978, 30949, 31123, 48895, 35214, 54622, 31123, 32616, 39905, 31901, 31639, 31155, 13, 13, 30995,
     30951, 517, 30910, 30943, 30996, 13, 13, 54761, 31211, 32820, 54266, 31876, 35153, 13, 13, 55437,
     31211]),
    ("def main():\n    print('hello world')\t# greeting",
     [64790, 64792, 884, 1301, 9427, 13, 296, 4466, 2029, 15616, 30914, 993, 3387, 12, 31010, 30174]),
]
# TEST(Pipeline, CodeGeeX2)
CHATGLM_CPP_CODEGEEX2 = ('# language: Python\n# write a bubble sort function\n',
                         [64790, 64792, 31010, 3239, 30954, 16719, 13, 31010, 3072, 260, 17338, 3482, 1674, 13])
CODEGEEX2_SP_SHA256 = "57d9fdbdfaa7cd8c0a3a38d7e8de2e6c31374b5dbc4dc4568d85585fe745812f"  # git-lfs pointer of THUDM/codegeex2-6b tokenizer.model


# ----------------------------------------------------------------------------- helpers

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_shared(arg):
    cands = [arg] if arg else ["/work/shared", os.path.join(REPO_ROOT, "..", "shared")]
    for c in cands:
        if c and os.path.isfile(os.path.join(c, "reference", "glm-4-9b-chat", "tokenizer.model")):
            return os.path.abspath(c)
    sys.exit(f"reference files not found in {cands}")


def load_glm4_encoding(path):
    import tiktoken
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    assert len(ranks) == GLM4_N_RANKS and sorted(ranks.values()) == list(range(GLM4_N_RANKS))
    specials = {s: len(ranks) + i for i, s in enumerate(GLM4_SPECIALS)}
    enc = tiktoken.Encoding(name="glm4", pat_str=GLM4_PAT_STR, mergeable_ranks=ranks, special_tokens=specials)
    return enc, specials


def hf_style_env_render(template, messages, add_generation_prompt):
    """Independent rendering: a jinja2 environment set up like HF transformers 4.4x's
    _compile_jinja_template (what THUDM's tokenizer used in 2024)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)


def render_glm4(messages):
    from transformers.utils.chat_template_utils import render_jinja_template
    rendered, _ = render_jinja_template(conversations=[messages], chat_template=GLM4_CHAT_TEMPLATE,
                                        add_generation_prompt=True)
    text = rendered[0]
    alt = hf_style_env_render(GLM4_CHAT_TEMPLATE, messages, True)
    assert text == alt, (text, alt)
    return text


def dump(path, obj):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


# ----------------------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default=None, help="folder with reference/ (default /work/shared or ../shared)")
    p.add_argument("--out", default=os.path.join(REPO_ROOT, "tests", "fixtures", "glm4"))
    args = p.parse_args()
    shared = find_shared(args.shared)
    os.makedirs(args.out, exist_ok=True)

    import sentencepiece as spm
    import tiktoken
    import transformers
    import jinja2

    assert hashlib.sha256(GLM4_CHAT_TEMPLATE.encode()).hexdigest() == GLM4_CHAT_TEMPLATE_SHA256
    glm4_tok = os.path.join(shared, "reference", "glm-4-9b-chat", "tokenizer.model")
    assert sha256_file(glm4_tok) == GLM4_TOKENIZER_SHA256, "unexpected GLM-4 tokenizer.model"
    enc, specials = load_glm4_encoding(glm4_tok)
    versions = {"tiktoken": tiktoken.__version__, "transformers": transformers.__version__,
                "jinja2": jinja2.__version__, "sentencepiece": spm.__version__}

    # ---- golden_tokens.json
    # independent check of pat_str + ranks against ids made with THUDM's tokenizer (chatglm.cpp tests)
    assert enc.encode_ordinary(CHATGLM_CPP_GLM4_CHKTXT) == CHATGLM_CPP_GLM4_CHKTXT_IDS
    assert enc.encode_ordinary(CHATGLM_CPP_GLM4_CODE) == CHATGLM_CPP_GLM4_CODE_IDS
    texts = TEXTS + [CHATGLM_CPP_GLM4_CHKTXT, CHATGLM_CPP_GLM4_CODE]
    assert len(set(texts)) == len(texts)
    cases = []
    for text in texts:
        ids = enc.encode(text, disallowed_special=())
        assert enc.decode_bytes(ids) == text.encode("utf-8")
        assert all(i < GLM4_N_RANKS for i in ids)
        cases.append({"text": text, "ids": ids})
    dump(os.path.join(args.out, "golden_tokens.json"), {
        "about": "GLM-4 (THUDM/glm-4-9b-chat) tiktoken ids of each text as ChatGLM4Tokenizer._tokenize gives them: "
                 "tiktoken encode(text, disallowed_special=()), i.e. special-token text such as '<|user|>' is "
                 "encoded as ordinary text; no [gMASK]<sop> prefix. decode(ids) gives back the text byte for byte. "
                 "Made by tools/make_glm_golden.py.",
        "source": {"tokenizer_model_sha256": GLM4_TOKENIZER_SHA256, "n_ranks": GLM4_N_RANKS,
                   "pat_str": GLM4_PAT_STR, "versions": versions},
        "cases": cases,
    })

    # ---- golden_chat.json (GLM-4)
    convs = {}
    for name, messages in GLM4_CHATS.items():
        text = render_glm4(messages)
        ids = enc.encode(text, allowed_special="all")
        assert ids[:2] == [specials["[gMASK]"], specials["<sop>"]] and ids[-1] == specials["<|assistant|>"]
        assert enc.decode(ids) == text
        convs[name] = {"messages": messages, "prompt": text, "ids": ids}
        if not any("tools" in m for m in messages):
            # THUDM's own ChatGLM4Tokenizer.build_chat_input encodes each message separately:
            # <|role|> + encode(metadata + "\n") + encode(content); differs from the template ids when a
            # content starts with whitespace that tiktoken would merge with the "\n" (see whitespace_and_code)
            alt = [specials["[gMASK]"], specials["<sop>"]]
            for m in messages:
                alt += ([specials[f"<|{m['role']}|>"]] + enc.encode(m.get("metadata", "") + "\n")
                        + enc.encode(m["content"], disallowed_special=()))
            convs[name]["ids_build_chat_input"] = alt + [specials["<|assistant|>"]]
        print(f"glm4 chat {name}: {len(ids)} ids")
    chat3 = [{"role": "user", "content": "你好"},
             {"role": "assistant", "content": "你好👋！很高兴见到你，有什么可以帮助你的吗？"},
             {"role": "user", "content": "晚上睡不着应该怎么办"}]
    assert enc.encode(render_glm4(chat3), allowed_special="all") == CHATGLM_CPP_GLM4_CHAT3_IDS
    # A documented detail of the real template: trim_blocks eats the first newline after the {% if %} that opens a tool.
    assert "# 可用工具\n## get_weather\n\n{\n    \"name\": \"get_weather\"" in convs["tool_call"]["prompt"]
    dump(os.path.join(args.out, "golden_chat.json"), {
        "about": "GLM-4-9B-chat prompts: each 'prompt' is THUDM's chat_template (below) rendered like HF transformers "
                 "(jinja2 sandbox, trim_blocks=True, lstrip_blocks=True, tojson = json.dumps(ensure_ascii=False)) with "
                 "add_generation_prompt=True; 'ids' is that text encoded with the 14 special tokens recognised "
                 "(tiktoken allowed_special='all'), as HF apply_chat_template(tokenize=True) returns them. Messages carry "
                 "role, content, optional metadata (tool name of an assistant call) and optional tools (OpenAI-style "
                 "list on the system message, as GLM-4's template reads item['tools']). 'ids_build_chat_input' (chats without "
                 "tools only): what THUDM's older ChatGLM4Tokenizer.build_chat_input gives, encoding each message on "
                 "its own; it differs from 'ids' only where a content starts with whitespace. Stop ids: 151329, 151336, 151338. "
                 "Made by tools/make_glm_golden.py.",
        "special_ids": specials,
        "eos_token_ids": [specials["<|endoftext|>"], specials["<|user|>"], specials["<|observation|>"]],
        "chat_template_source": "THUDM/glm-4-9b-chat tokenizer_config.json chat_template (verbatim copies in "
                                "huggingface/huggingface.js packages/ollama-utils/src/chat-template-automap.ts, "
                                "entry library/glm4:9b, and ShishirPatil/gorilla bfcl_eval/model_handler/"
                                "local_inference/glm.py)",
        "chat_template_sha256": GLM4_CHAT_TEMPLATE_SHA256,
        "chat_template": GLM4_CHAT_TEMPLATE,
        "versions": versions,
        "conversations": convs,
    })

    # ---- golden_chatglm2.json
    sp_path = os.path.join(shared, "reference", "chatglm3", "tokenizer.model")
    sp_sha = sha256_file(sp_path)
    assert sp_sha == CHATGLM_SP_SHA256, sp_sha
    sp = spm.SentencePieceProcessor(model_file=sp_path)
    n_words = sp.vocab_size()
    assert n_words == sp.get_piece_size() == 64789 and (sp.bos_id(), sp.eos_id(), sp.unk_id()) == (1, 2, 0)
    sp_specials = {s: n_words + i for i, s in enumerate(CHATGLM2_SPECIALS)}
    # cross-check the SentencePiece use against the ChatGLM3 golden ids made with THUDM's own code
    g3 = os.path.join(shared, "reference", "chatglm3", "golden_tokens.json")
    if os.path.isfile(g3):
        with open(g3, encoding="utf-8") as f:
            for c in json.load(f)["cases"]:
                assert sp.encode(c["text"]) == c["ids"], c["text"]
        print("ChatGLM3 golden_tokens.json reproduced with this SentencePiece model")
    g3c = os.path.join(shared, "reference", "chatglm3", "golden_chat.json")
    if os.path.isfile(g3c):
        with open(g3c, encoding="utf-8") as f:
            g3_ids = json.load(f)["special_ids"]
        # ChatGLM3's SPTokenizer appends the same five specials in the same order before its role tokens
        assert all(g3_ids[k] == v for k, v in sp_specials.items()), (g3_ids, sp_specials)

    # CodeGeeX2-6B's tokenizer.model is this file with normalizer_spec.add_dummy_prefix = false, byte for byte:
    # re-serialising the proto with that one flag flipped gives the sha256 of THUDM/codegeex2-6b's tokenizer.model.
    from sentencepiece import sentencepiece_model_pb2 as pb
    proto = pb.ModelProto()
    with open(sp_path, "rb") as f:
        proto.ParseFromString(f.read())
    proto.normalizer_spec.add_dummy_prefix = False
    cg_bytes = proto.SerializeToString()
    assert hashlib.sha256(cg_bytes).hexdigest() == CODEGEEX2_SP_SHA256
    sp_cg = spm.SentencePieceProcessor(model_proto=cg_bytes)

    def chatglm2_encode(text, proc=sp):
        # HF PreTrainedTokenizer path: _tokenize = sp EncodeAsPieces, ids = PieceToId, then [gMASK] sop prefix
        pieces = proc.encode_as_pieces(text)
        ids = [proc.piece_to_id(x) for x in pieces]
        assert ids == proc.encode(text)
        return [sp_specials["[gMASK]"], sp_specials["sop"]] + ids

    for text, ids in CHATGLM_CPP_CHATGLM2:
        assert chatglm2_encode(text) == ids, text
    assert chatglm2_encode(CHATGLM_CPP_CODEGEEX2[0], sp_cg) == CHATGLM_CPP_CODEGEEX2[1]
    print("chatglm.cpp's ChatGLM2 and CodeGeeX2 tokenizer cases reproduced")

    def build_prompt(query, history):
        prompt = ""
        for i, (q, r) in enumerate(history):
            prompt += "[Round {}]\n\n问：{}\n\n答：{}\n\n".format(i + 1, q, r)
        return prompt + "[Round {}]\n\n问：{}\n\n答：".format(len(history) + 1, query)

    cases2 = []
    for name, (query, history) in CHATGLM2_CHATS.items():
        prompt = build_prompt(query, history)
        cases2.append({"name": name, "kind": "build_prompt", "tokenizer": "chatglm2", "query": query,
                       "history": [list(h) for h in history], "prompt": prompt, "ids": chatglm2_encode(prompt)})
    assert cases2[-1]["ids"] == CHATGLM_CPP_CHATGLM2[2][1]  # two_rounds is chatglm.cpp's case
    for name, (tok, text) in CHATGLM2_PLAIN.items():
        cases2.append({"name": name, "kind": "encode", "tokenizer": tok, "prompt": text,
                       "ids": chatglm2_encode(text, sp_cg if tok == "codegeex2" else sp)})
    dump(os.path.join(args.out, "golden_chatglm2.json"), {
        "about": "ChatGLM2-6B / CodeGeeX2-6B prompts as THUDM's ChatGLMTokenizer builds them: kind 'build_prompt' = "
                 "build_prompt(query, history) ('[Round i]\\n\\n问：q\\n\\n答：a\\n\\n' per past round, i from 1, then "
                 "'[Round n]\\n\\n问：query\\n\\n答：'), kind 'encode' = the text as is (CodeGeeX2-6B / ChatGLM3-6B-base "
                 "completion style); ids = [gMASK] sop + SentencePiece ids of the prompt (tokenizer([prompt]) / "
                 "tokenizer.encode). Stop id: 2 (</s>). tokenizer 'chatglm2' = the ChatGLM3-6B tokenizer.model "
                 "(sha256 below; assumed identical to ChatGLM2-6B's, and it reproduces chatglm.cpp's ChatGLM2 test ids); "
                 "tokenizer 'codegeex2' = the same file with normalizer_spec.add_dummy_prefix=false, which is byte for "
                 "byte CodeGeeX2-6B's tokenizer.model (sha256 below): no dummy space before the first piece. "
                 "Made by tools/make_glm_golden.py.",
        "tokenizer_model_sha256": {"chatglm2": sp_sha, "codegeex2": CODEGEEX2_SP_SHA256},
        "sp_vocab_size": n_words,
        "special_ids": sp_specials,
        "eos_token_id": sp.eos_id(),
        "versions": versions,
        "cases": cases2,
    })


if __name__ == "__main__":
    main()
