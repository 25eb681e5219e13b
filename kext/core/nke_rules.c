/*
 * Capture configuration: validation (every malformed field has its own
 * error) and classification of one piece of data. Pure functions; the core
 * keeps its validated copy under the platform lock.
 */
#include "nke_core.h"

#include <string.h>

#define CAPTURE_HDR_SIZE ((uint32_t)offsetof(struct nke_capture_config, rules))

static bool comm_terminated(const char comm[NKE_COMM_LEN])
{
    uint32_t i;
    for (i = 0; i < NKE_COMM_LEN; i++)
        if (comm[i] == '\0')
            return true;
    return false;
}

static int rule_validate(const struct nke_rule *r)
{
    if (r->match & ~NKE_MATCH_ALL_FIELDS)
        return NKE_ERR_FLAGS;
    if (r->action > NKE_RULE_HOLD)
        return NKE_ERR_ACTION;
    if (r->_pad0 != 0)
        return NKE_ERR_RESERVED;
    /* Every string must be terminated, matched or not: the rule is echoed
     * back to clients and printed. */
    if (!comm_terminated(r->comm))
        return NKE_ERR_RULE;
    if ((r->match & NKE_MATCH_COMM) && r->comm[0] == '\0')
        return NKE_ERR_RULE;
    if ((r->match & NKE_MATCH_DIRECTION) &&
        (r->direction == 0 || (r->direction & ~(uint8_t)(NKE_DIR_IN | NKE_DIR_OUT))))
        return NKE_ERR_RULE;
    if ((r->match & NKE_MATCH_PROTOCOL) && r->protocol != NKE_PROTO_TCP &&
        r->protocol != NKE_PROTO_UDP)
        return NKE_ERR_RULE;
    if ((r->match & NKE_MATCH_FAMILY) && r->family != NKE_AF_INET && r->family != NKE_AF_INET6)
        return NKE_ERR_RULE;
    if ((r->match & NKE_MATCH_LOCAL_PORT) && r->local_port_min > r->local_port_max)
        return NKE_ERR_RULE;
    if ((r->match & NKE_MATCH_REMOTE_PORT) && r->remote_port_min > r->remote_port_max)
        return NKE_ERR_RULE;
    {
        /* A prefix longer than the rule's family allows can never match. */
        uint8_t max = ((r->match & NKE_MATCH_FAMILY) && r->family == NKE_AF_INET) ? 32u : 128u;
        if ((r->match & NKE_MATCH_LOCAL_ADDR) && r->local_prefix > max)
            return NKE_ERR_RULE;
        if ((r->match & NKE_MATCH_REMOTE_ADDR) && r->remote_prefix > max)
            return NKE_ERR_RULE;
    }
    return NKE_OK;
}

int nke_capture_validate(const struct nke_capture_config *cfg, uint32_t size)
{
    uint32_t i;
    if (cfg == NULL || size < CAPTURE_HDR_SIZE || size > sizeof(*cfg))
        return NKE_ERR_SIZE;
    if (cfg->abi_version != NKE_ABI_VERSION)
        return NKE_ERR_VERSION;
    if (cfg->mode > NKE_CAPTURE_RULES)
        return NKE_ERR_MODE;
    if (cfg->default_action > NKE_RULE_HOLD)
        return NKE_ERR_ACTION;
    if (cfg->hold_timeout_ms > NKE_HOLD_TIMEOUT_MAX_MS)
        return NKE_ERR_MODE; /* no own code in the ABI: the timeout is part of the mode */
    if (cfg->nrules > NKE_MAX_RULES)
        return NKE_ERR_COUNT;
    /* Only the rules in use need to be sent; never read past `size`. */
    if (size < CAPTURE_HDR_SIZE + cfg->nrules * (uint32_t)sizeof(struct nke_rule))
        return NKE_ERR_SIZE;
    for (i = 0; i < cfg->nrules; i++) {
        int err = rule_validate(&cfg->rules[i]);
        if (err != NKE_OK)
            return err;
    }
    return NKE_OK;
}

static bool prefix_match(const uint8_t *a, const uint8_t *b, uint32_t bits)
{
    uint32_t whole = bits / 8u, rest = bits % 8u;
    if (whole && memcmp(a, b, whole) != 0)
        return false;
    if (rest) {
        uint8_t mask = (uint8_t)(0xFFu << (8u - rest));
        if ((a[whole] & mask) != (b[whole] & mask))
            return false;
    }
    return true;
}

static bool addr_match(const struct nke_addr *a, const uint8_t rule_addr[16], uint8_t prefix)
{
    /* No address known (e.g. unconnected UDP): an address rule cannot match. */
    if (a->family != NKE_AF_INET && a->family != NKE_AF_INET6)
        return false;
    if (a->family == NKE_AF_INET && prefix > 32u)
        return false;
    return prefix_match(a->addr, rule_addr, prefix);
}

static bool rule_match(const struct nke_rule *r, const struct nke_flow *f)
{
    uint32_t m = r->match;
    if ((m & NKE_MATCH_PID) && r->pid != f->pid)
        return false;
    if ((m & NKE_MATCH_COMM) && strncmp(r->comm, f->comm, NKE_COMM_LEN) != 0)
        return false;
    if ((m & NKE_MATCH_DIRECTION) && !(r->direction & f->direction))
        return false;
    if ((m & NKE_MATCH_PROTOCOL) && r->protocol != f->protocol)
        return false;
    if ((m & NKE_MATCH_FAMILY) && r->family != f->family)
        return false;
    if ((m & NKE_MATCH_LOCAL_PORT) &&
        (f->local.port < r->local_port_min || f->local.port > r->local_port_max))
        return false;
    if ((m & NKE_MATCH_REMOTE_PORT) &&
        (f->remote.port < r->remote_port_min || f->remote.port > r->remote_port_max))
        return false;
    if ((m & NKE_MATCH_LOCAL_ADDR) && !addr_match(&f->local, r->local_addr, r->local_prefix))
        return false;
    if ((m & NKE_MATCH_REMOTE_ADDR) && !addr_match(&f->remote, r->remote_addr, r->remote_prefix))
        return false;
    return true;
}

uint32_t nke_capture_classify(const struct nke_capture_config *cfg, const struct nke_flow *f,
                              uint16_t *rule)
{
    uint32_t i, n;
    if (rule)
        *rule = NKE_RULE_DEFAULT;
    switch (cfg->mode) {
    case NKE_CAPTURE_ALL:
        return NKE_RULE_HOLD;
    case NKE_CAPTURE_RULES:
        n = cfg->nrules > NKE_MAX_RULES ? NKE_MAX_RULES : cfg->nrules;
        for (i = 0; i < n; i++) {
            if (rule_match(&cfg->rules[i], f)) {
                if (rule)
                    *rule = (uint16_t)i;
                return cfg->rules[i].action;
            }
        }
        return cfg->default_action;
    default:
        return NKE_RULE_PASS;
    }
}
