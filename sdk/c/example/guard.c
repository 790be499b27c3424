/* guard: rejects requests whose last message mentions a secret word
 * (config {"word":"..."}), and labels responses that were cut short. */
#include "portcullis.h"

static char word[64] = "password";

PC_ON_CONFIG(cfg) {
    pc_str w;
    if (pc_json_get(cfg, "word", &w)) {
        if (pc_json_type(w) != '"' || w.n - 2 >= sizeof word) return pc_error("word: want a short string");
        word[pc_json_unescape(w, word)] = 0;
    }
    return PC_CONTINUE;
}

PC_ON_REQUEST(env) {
    pc_str msgs, msg, content;
    if (!pc_json_path(env, "body.messages", &msgs)) return PC_CONTINUE;
    pc_iter it;
    pc_json_iter(msgs, &it);
    int found = 0;
    while (pc_json_next(&it, NULL, &msg)) {
        if (!pc_json_get(msg, "content", &content) || pc_json_type(content) != '"') continue;
        pc_str text = pc_json_string(content); /* decoded, malloc'd */
        for (size_t i = 0; !found && i + strlen(word) <= text.n; i++)
            found = memcmp(text.p + i, word, strlen(word)) == 0;
        free((void *)text.p);
    }
    if (found) return pc_reject(400, "secret_in_prompt", "the prompt mentions a secret");
    return PC_CONTINUE;
}

PC_ON_RESPONSE(env) {
    pc_str reason;
    if (pc_json_path(env, "body.choices.0.finish_reason", &reason) && pc_json_str_eq(reason, "length")) {
        pc_res r;
        pc_res_init(&r);
        pc_res_label(&r, "truncated");
        return pc_res_finish(&r);
    }
    return PC_CONTINUE;
}
