"""The tiny character-level tokenizer shared by the tiny policy and the tiny reward model.

One token per character of printable ASCII (chr 32..126) plus newline, and six special tokens.
Built with the `tokenizers` library and wrapped as a `PreTrainedTokenizerFast`, so it saves
and loads with `save_pretrained` / `AutoTokenizer.from_pretrained` like any real tokenizer.

Encoding adds no special tokens by itself (no BOS post-processor): the chat template writes
`<|bos|>` explicitly, so a trainer that tokenizes a templated string gets exactly one BOS
whether or not it passes `add_special_tokens`.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, USER, ASSISTANT, UNK = (
    "<|pad|>",
    "<|bos|>",
    "<|eos|>",
    "<|user|>",
    "<|assistant|>",
    "<|unk|>",
)
SPECIAL_TOKENS = [PAD, BOS, EOS, USER, ASSISTANT, UNK]
CHARACTERS = ["\n"] + [chr(code) for code in range(32, 127)]

# One turn is `<|role|>content<|eos|>`; the conversation starts with `<|bos|>`. Generation
# stops at `<|eos|>` because that is the tokenizer's (and generation config's) eos token.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>' }}"
    "{% else %}{{ raise_exception('the tiny chat template knows only the user and "
    "assistant roles, got ' + message['role']) }}{% endif %}"
    "{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Return the character-level fast tokenizer (vocabulary of 102 tokens)."""
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # `[\s\S]` isolates every character, newline included; Fuse joins them back unchanged.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[USER, ASSISTANT],
        clean_up_tokenization_spaces=False,  # would turn " ." into "." on decode
        model_max_length=256,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
