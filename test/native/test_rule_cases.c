/*
 * The shared rule table (test/shared/rule-cases.json), kernel side: each
 * case's `kernel` config is built as an nke_capture_config, validated, and
 * its `flow` classified by nke_capture_classify; the action and the rule it
 * names (index, or NKE_RULE_DEFAULT) must be the case's `expect`. The same
 * file is run by test/helper/rule-cases.test.ts for the helper's half (the
 * rules compiled to that config; its decision from the rule named), so the
 * two sides cannot drift apart. One check per case; the last line is
 * `N passed, N failed`. Usage: test_rule_cases [FILE] (default: the file
 * beside this directory's parent, found from the working directory).
 *
 * A reader for the JSON this file uses, not a general parser: objects,
 * arrays, strings without escapes but \" and \\, integers, true/false/null.
 */
#include "nke_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum jtype { J_NULL, J_NUM, J_STR, J_ARR, J_OBJ, J_BOOL };

struct jval {
    enum jtype type;
    long long num;
    char *str;             /* J_STR; key of an object member in `key` */
    char *key;
    struct jval *kids;     /* J_ARR, J_OBJ */
    size_t nkids;
};

static const char *P;
static int g_bad;

static void skip_ws(void)
{
    while (*P == ' ' || *P == '\n' || *P == '\r' || *P == '\t')
        P++;
}

static char *parse_string(void)
{
    char *out, *o;
    const char *s;
    size_t n = 0;
    if (*P != '"') {
        g_bad = 1;
        return NULL;
    }
    for (s = P + 1; *s && *s != '"'; s++, n++)
        if (*s == '\\' && s[1])
            s++;
    out = o = malloc(n + 1);
    for (P++; *P && *P != '"'; P++) {
        if (*P == '\\' && P[1])
            P++;
        *o++ = *P;
    }
    *o = '\0';
    if (*P == '"')
        P++;
    else
        g_bad = 1;
    return out;
}

static void parse_value(struct jval *v);

static void parse_list(struct jval *v, char close, int with_keys)
{
    size_t cap = 0;
    P++;
    skip_ws();
    while (*P && *P != close && !g_bad) {
        struct jval kid;
        memset(&kid, 0, sizeof(kid));
        if (with_keys) {
            kid.key = parse_string();
            skip_ws();
            if (*P != ':') {
                g_bad = 1;
                return;
            }
            P++;
        }
        parse_value(&kid);
        if (v->nkids == cap) {
            cap = cap ? 2 * cap : 8;
            v->kids = realloc(v->kids, cap * sizeof(*v->kids));
        }
        v->kids[v->nkids++] = kid;
        skip_ws();
        if (*P == ',') {
            P++;
            skip_ws();
        }
    }
    if (*P == close)
        P++;
    else
        g_bad = 1;
}

static void parse_value(struct jval *v)
{
    skip_ws();
    if (*P == '{') {
        v->type = J_OBJ;
        parse_list(v, '}', 1);
    } else if (*P == '[') {
        v->type = J_ARR;
        parse_list(v, ']', 0);
    } else if (*P == '"') {
        v->type = J_STR;
        v->str = parse_string();
    } else if (*P == '-' || (*P >= '0' && *P <= '9')) {
        char *end;
        v->type = J_NUM;
        v->num = strtoll(P, &end, 10);
        P = end;
    } else if (!strncmp(P, "true", 4) || !strncmp(P, "false", 5)) {
        v->type = J_BOOL;
        v->num = *P == 't';
        P += *P == 't' ? 4 : 5;
    } else if (!strncmp(P, "null", 4)) {
        v->type = J_NULL;
        P += 4;
    } else {
        g_bad = 1;
    }
}

static void jfree(struct jval *v)
{
    size_t i;
    for (i = 0; i < v->nkids; i++)
        jfree(&v->kids[i]);
    free(v->kids);
    free(v->str);
    free(v->key);
}

static const struct jval *get(const struct jval *o, const char *key)
{
    size_t i;
    if (o == NULL || o->type != J_OBJ)
        return NULL;
    for (i = 0; i < o->nkids; i++)
        if (strcmp(o->kids[i].key, key) == 0)
            return &o->kids[i];
    return NULL;
}

static long long num(const struct jval *o, const char *key, long long dflt)
{
    const struct jval *v = get(o, key);
    return v && v->type == J_NUM ? v->num : dflt;
}

static void bytes(const struct jval *o, const char *key, uint8_t out[16])
{
    const struct jval *v = get(o, key);
    size_t i;
    memset(out, 0, 16);
    for (i = 0; v && v->type == J_ARR && i < v->nkids && i < 16; i++)
        out[i] = (uint8_t)v->kids[i].num;
}

static uint32_t action_of(const char *s)
{
    if (s && strcmp(s, "hold") == 0)
        return NKE_RULE_HOLD;
    if (s && strcmp(s, "report") == 0)
        return NKE_RULE_REPORT;
    return NKE_RULE_PASS;
}

static void addr_of(const struct jval *a, struct nke_addr *out)
{
    memset(out, 0, sizeof(*out));
    out->family = (uint8_t)num(a, "family", 0);
    out->port = (uint16_t)num(a, "port", 0);
    bytes(a, "addr", out->addr);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    long n;
    char *b;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(b);
        return NULL;
    }
    b[n] = '\0';
    fclose(f);
    return b;
}

int main(int argc, char **argv)
{
    static const char *tries[] = {"test/shared/rule-cases.json", "../shared/rule-cases.json",
                                  "../../test/shared/rule-cases.json"};
    const char *path = argc > 1 ? argv[1] : NULL;
    char *text = NULL;
    struct jval root, *cases;
    size_t i, k;
    int passed = 0, failed = 0;
    if (path)
        text = read_file(path);
    for (k = 0; !path && k < sizeof(tries) / sizeof(tries[0]) && !text; k++)
        text = read_file(path = tries[k]);
    if (!text) {
        fprintf(stderr, "rule cases: cannot read %s (run from the project root or give the file)\n",
                argc > 1 ? argv[1] : "test/shared/rule-cases.json");
        printf("0 passed, 1 failed\n");
        return 1;
    }
    memset(&root, 0, sizeof(root));
    P = text;
    parse_value(&root);
    cases = (struct jval *)get(&root, "cases");
    if (g_bad || cases == NULL || cases->type != J_ARR || cases->nkids == 0) {
        fprintf(stderr, "rule cases: %s is not the table this test reads (near byte %ld)\n", path,
                (long)(P - text));
        printf("0 passed, 1 failed\n");
        return 1;
    }
    for (i = 0; i < cases->nkids; i++) {
        const struct jval *c = &cases->kids[i];
        const struct jval *kern = get(c, "kernel"), *rules = get(kern, "rules");
        const struct jval *flow = get(c, "flow"), *expect = get(c, "expect");
        const struct jval *what = get(c, "what"), *want_rule = get(expect, "rule");
        const struct jval *def = get(kern, "default"), *want_act = get(expect, "action");
        static struct nke_capture_config cfg;
        struct nke_flow f;
        uint32_t action, want_action;
        uint16_t rule = 0, want;
        int err;
        memset(&cfg, 0, sizeof(cfg));
        cfg.abi_version = NKE_ABI_VERSION;
        cfg.mode = NKE_CAPTURE_RULES;
        cfg.default_action = action_of(def ? def->str : NULL);
        cfg.tag = (uint32_t)i + 1u;
        for (k = 0; rules && k < rules->nkids && k < NKE_MAX_RULES; k++) {
            const struct jval *r = &rules->kids[k], *comm = get(r, "comm");
            struct nke_rule *nr = &cfg.rules[k];
            nr->match = (uint32_t)num(r, "match", 0);
            nr->action = (uint8_t)num(r, "action", 0);
            nr->direction = (uint8_t)num(r, "direction", 0);
            nr->protocol = (uint8_t)num(r, "protocol", 0);
            nr->family = (uint8_t)num(r, "family", 0);
            nr->pid = (int32_t)num(r, "pid", 0);
            nr->local_port_min = (uint16_t)num(r, "local_port_min", 0);
            nr->local_port_max = (uint16_t)num(r, "local_port_max", 0);
            nr->remote_port_min = (uint16_t)num(r, "remote_port_min", 0);
            nr->remote_port_max = (uint16_t)num(r, "remote_port_max", 0);
            nr->local_prefix = (uint8_t)num(r, "local_prefix", 0);
            nr->remote_prefix = (uint8_t)num(r, "remote_prefix", 0);
            bytes(r, "local_addr", nr->local_addr);
            bytes(r, "remote_addr", nr->remote_addr);
            if (comm && comm->type == J_STR)
                strncpy(nr->comm, comm->str, NKE_COMM_LEN - 1);
            cfg.nrules++;
        }
        memset(&f, 0, sizeof(f));
        f.pid = (int32_t)num(flow, "pid", 0);
        if (get(flow, "comm"))
            strncpy(f.comm, get(flow, "comm")->str, NKE_COMM_LEN - 1);
        f.direction = (uint8_t)num(flow, "direction", 0);
        f.protocol = (uint8_t)num(flow, "protocol", 0);
        f.family = (uint8_t)num(flow, "family", 0);
        addr_of(get(flow, "local"), &f.local);
        addr_of(get(flow, "remote"), &f.remote);
        want = want_rule && want_rule->type == J_NUM ? (uint16_t)want_rule->num : NKE_RULE_DEFAULT;
        want_action = action_of(want_act ? want_act->str : NULL);

        err = nke_capture_validate(&cfg, sizeof(cfg));
        action = err == NKE_OK ? nke_capture_classify(&cfg, &f, &rule) : 0xFFFFFFFFu;
        if (err == NKE_OK && action == want_action && rule == want) {
            passed++;
            printf("ok   %s\n", what ? what->str : "?");
        } else {
            failed++;
            printf("FAIL %s\n     validate %d, action %u (want %u), rule %u (want %u)\n",
                   what ? what->str : "?", err, action, want_action, rule, want);
        }
    }
    jfree(&root);
    free(text);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
