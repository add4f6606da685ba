// The prompt-size estimate kvtier uses where it does not tokenize: the proxy
// balances load by it, the fake engine reports it as usage.prompt_tokens.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvtier::openai {

// Tokens of `chars` characters of text: about four characters a token,
// rounded up. (Token-id arrays count one token per id.)
inline int64_t TextTokens(size_t chars) { return static_cast<int64_t>((chars + 3) / 4); }

}  // namespace kvtier::openai
