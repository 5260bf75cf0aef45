// data/chat_masks.h -- which text of a chat rendered by the model's own chat template carries loss: each
// assistant turn, marked in the rendering of the whole conversation. Not here: rendering (chat_template.h).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "data/pipeline.h"

namespace lmforge::data {

class ChatTemplate;

// The whole conversation rendered once (no generation prompt), cut into segments: an assistant turn's
// segment is trained, the rest is not. The trained text of a turn is found by the first method that
// applies (README, "Chat templates"):
// 1. the template's {% generation %} blocks, exactly as written (transformers' assistant masks);
// 2. the prefix method: messages[:i] with the generation prompt and messages[:i+1] render as prefixes of
//    the whole rendering; turn i is the text between them (what lmforge did before; kept so that
//    datasets of templates it served keep their masks and ids);
// 3. located spans, for templates that rewrite earlier turns (Qwen3 writes a think block only after
//    the last user message): in order, after the generation prompt's text (the turn's header), the
//    message's content (whitespace-stripped; its think block, tool calls and whatever the template
//    writes before it belong to the turn), through the first special token after it (the end-of-turn
//    token) and the line break after that, which is where method 2 ends a turn too.
// A turn that cannot be found throws InputError naming `where` (the record) and the turn.
std::vector<Segment> chat_segments(const ChatTemplate& t, const nlohmann::ordered_json& messages,
                                   const nlohmann::ordered_json& tools, const std::string& where);

}  // namespace lmforge::data
