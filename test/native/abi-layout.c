/*
 * Prints, as JSON, the layout the C compiler gives every struct of the ABI
 * headers (size; per field: offset, size, element type, array length) and the
 * value of every constant. test/unit/abi-layout.test.ts compiles and runs it
 * and compares the output with the TypeScript mirror
 * (extension/src/shared/abi.ts) in both directions.
 *
 * Field types come from _Generic, so a field changed from uint32_t to int32_t
 * shows up even when its size and offset stay put. The test also checks that
 * the fields listed here tile each struct exactly, so a field added to a
 * header but not listed here is caught by the gap it leaves.
 *
 * Build: cc -std=c11 -I kext/include -I native/emu/include test/native/abi-layout.c
 */
#include <stdio.h>
#include <string.h>

#include <nke/nke_abi.h>
#include <nke_emu_proto.h>

#define TYPE_NAME(x)                                      \
    _Generic((x),                                         \
        uint8_t: "u8",                                    \
        uint16_t: "u16",                                  \
        uint32_t: "u32",                                  \
        int32_t: "i32",                                   \
        uint64_t: "u64",                                  \
        char: "char",                                     \
        struct nke_dq_entry: "struct:nke_dq_entry",       \
        struct nke_sock_id: "struct:nke_sock_id",         \
        struct nke_addr: "struct:nke_addr",               \
        struct nke_nt_hdr: "struct:nke_nt_hdr",           \
        struct nke_filter_state: "struct:nke_filter_state", \
        struct nke_rule: "struct:nke_rule",               \
        default: "unknown")

static int first_struct = 1;
static int first_field;
static int first_const = 1;

static void struct_begin(const char *name, size_t size)
{
    printf("%s\n    {\"name\": \"%s\", \"size\": %zu, \"fields\": [", first_struct ? "" : ",", name, size);
    first_struct = 0;
    first_field = 1;
}

static void struct_end(void)
{
    printf("\n    ]}");
}

static void field(const char *name, size_t offset, size_t size, const char *type, long length)
{
    printf("%s\n      {\"name\": \"%s\", \"offset\": %zu, \"size\": %zu, \"type\": \"%s\", \"length\": %ld}",
           first_field ? "" : ",", name, offset, size, type, length);
    first_field = 0;
}

/* A scalar or struct member: length -1 means "not an array". */
#define F(T, f) field(#f, offsetof(struct T, f), sizeof(((struct T *)0)->f), TYPE_NAME(((struct T *)0)->f), -1)
/* An array member: the element type and the element count. */
#define A(T, f)                                                                           \
    field(#f, offsetof(struct T, f), sizeof(((struct T *)0)->f), TYPE_NAME(((struct T *)0)->f[0]), \
          (long)(sizeof(((struct T *)0)->f) / sizeof(((struct T *)0)->f[0])))
#define S(T) struct_begin(#T, sizeof(struct T))

static void const_num(const char *name, unsigned long long value)
{
    printf("%s\n    \"%s\": %llu", first_const ? "" : ",", name, value);
    first_const = 0;
}

static void const_str(const char *name, const char *value)
{
    /* The header strings are plain ASCII identifiers; escape anyway so a
     * future quote or backslash cannot produce invalid JSON. */
    printf("%s\n    \"%s\": \"", first_const ? "" : ",", name);
    for (const char *p = value; *p; p++) {
        if (*p == '"' || *p == '\\') putchar('\\');
        putchar(*p);
    }
    putchar('"');
    first_const = 0;
}

#define C(name) const_num(#name, (unsigned long long)(name))
#define CS(name) const_str(#name, name)

int main(void)
{
    printf("{\n  \"structs\": [");

    S(nke_dq_entry); F(nke_dq_entry, size); A(nke_dq_entry, data); struct_end();
    S(nke_dq_memory); F(nke_dq_memory, queue_size); F(nke_dq_memory, head); F(nke_dq_memory, tail);
    A(nke_dq_memory, queue); struct_end();
    S(nke_sock_id); F(nke_sock_id, slot); F(nke_sock_id, gen); struct_end();
    S(nke_addr); F(nke_addr, family); F(nke_addr, _pad0); F(nke_addr, port); F(nke_addr, scope_id);
    A(nke_addr, addr); struct_end();
    S(nke_open_request); F(nke_open_request, abi_version); F(nke_open_request, flags);
    F(nke_open_request, client_pid); F(nke_open_request, _pad0); struct_end();
    S(nke_open_reply); F(nke_open_reply, abi_version); F(nke_open_reply, buffer_count);
    F(nke_open_reply, buffer_size); F(nke_open_reply, queue_data_size); F(nke_open_reply, kev_vendor_code);
    F(nke_open_reply, kev_msg_limit); F(nke_open_reply, session_id); struct_end();
    S(nke_nt_hdr); F(nke_nt_hdr, type); F(nke_nt_hdr, size); F(nke_nt_hdr, flags); F(nke_nt_hdr, sock);
    F(nke_nt_hdr, time_ns); struct_end();
    S(nke_nt_attach); F(nke_nt_attach, hdr); F(nke_nt_attach, pid); F(nke_nt_attach, uid);
    F(nke_nt_attach, family); F(nke_nt_attach, type); F(nke_nt_attach, protocol); F(nke_nt_attach, _pad0);
    F(nke_nt_attach, _pad1); A(nke_nt_attach, comm); struct_end();
    S(nke_nt_detach); F(nke_nt_detach, hdr); F(nke_nt_detach, bytes_in); F(nke_nt_detach, bytes_out);
    struct_end();
    S(nke_nt_addrs); F(nke_nt_addrs, hdr); F(nke_nt_addrs, local); F(nke_nt_addrs, remote); struct_end();
    S(nke_nt_event); F(nke_nt_event, hdr); F(nke_nt_event, event); F(nke_nt_event, _pad0); struct_end();
    S(nke_nt_option); F(nke_nt_option, hdr); F(nke_nt_option, level); F(nke_nt_option, name);
    F(nke_nt_option, is_set); F(nke_nt_option, _pad0); struct_end();
    S(nke_nt_data); F(nke_nt_data, hdr); F(nke_nt_data, chunk_id); F(nke_nt_data, stream_offset);
    F(nke_nt_data, size); F(nke_nt_data, direction); F(nke_nt_data, _pad0); F(nke_nt_data, nbuffers);
    F(nke_nt_data, deadline_ms); F(nke_nt_data, capture_tag); F(nke_nt_data, addr); A(nke_nt_data, buffers);
    F(nke_nt_data, rule); A(nke_nt_data, _pad1); struct_end();
    S(nke_nt_chunk_released); F(nke_nt_chunk_released, hdr); F(nke_nt_chunk_released, chunk_id);
    F(nke_nt_chunk_released, reason); F(nke_nt_chunk_released, size); struct_end();
    S(nke_nt_data_gap); F(nke_nt_data_gap, hdr); F(nke_nt_data_gap, stream_offset); F(nke_nt_data_gap, size);
    F(nke_nt_data_gap, direction); F(nke_nt_data_gap, reason); F(nke_nt_data_gap, _pad0); struct_end();
    S(nke_filter_state); F(nke_filter_state, abi_version); F(nke_filter_state, flags);
    F(nke_filter_state, capture_mode); F(nke_filter_state, sockets_live); F(nke_filter_state, chunks_pending);
    F(nke_filter_state, buffers_in_use); F(nke_filter_state, sockets_attached); F(nke_filter_state, chunks_held);
    F(nke_filter_state, chunks_reported); F(nke_filter_state, chunks_passed_pool_full);
    F(nke_filter_state, chunks_auto_released); F(nke_filter_state, chunks_dropped);
    F(nke_filter_state, chunks_modified); F(nke_filter_state, bytes_held); F(nke_filter_state, responses_rejected);
    F(nke_filter_state, notifications_lost); F(nke_filter_state, sockets_untracked);
    F(nke_filter_state, stale_entries);
    F(nke_filter_state, bytes_kept); F(nke_filter_state, chunks_queued);
    F(nke_filter_state, chunks_passed_budget); struct_end();
    S(nke_nt_state); F(nke_nt_state, hdr); F(nke_nt_state, state); struct_end();
    S(nke_response_hdr); F(nke_response_hdr, abi_version); F(nke_response_hdr, size);
    F(nke_response_hdr, nverdicts); F(nke_response_hdr, nreleases); F(nke_response_hdr, flags); struct_end();
    S(nke_verdict); F(nke_verdict, chunk_id); F(nke_verdict, sock); F(nke_verdict, action); A(nke_verdict, _pad0);
    F(nke_verdict, modified_len); struct_end();
    S(nke_release); F(nke_release, chunk_id); F(nke_release, buffer); F(nke_release, _pad0); F(nke_release, _pad1);
    struct_end();
    S(nke_put_data_hdr); F(nke_put_data_hdr, chunk_id); F(nke_put_data_hdr, sock); F(nke_put_data_hdr, total_len);
    F(nke_put_data_hdr, offset); F(nke_put_data_hdr, len); F(nke_put_data_hdr, _pad0); struct_end();
    S(nke_rule); F(nke_rule, match); F(nke_rule, action); F(nke_rule, direction); F(nke_rule, protocol);
    F(nke_rule, family); F(nke_rule, pid); F(nke_rule, local_port_min); F(nke_rule, local_port_max);
    F(nke_rule, remote_port_min); F(nke_rule, remote_port_max); F(nke_rule, local_prefix);
    F(nke_rule, remote_prefix); F(nke_rule, _pad0); A(nke_rule, local_addr); A(nke_rule, remote_addr);
    A(nke_rule, comm); struct_end();
    S(nke_capture_config); F(nke_capture_config, abi_version); F(nke_capture_config, mode);
    F(nke_capture_config, default_action); F(nke_capture_config, hold_timeout_ms); F(nke_capture_config, nrules);
    F(nke_capture_config, tag); A(nke_capture_config, rules); struct_end();
    S(nke_kern_event_msg); F(nke_kern_event_msg, total_size); F(nke_kern_event_msg, vendor_code);
    F(nke_kern_event_msg, kev_class); F(nke_kern_event_msg, kev_subclass); F(nke_kern_event_msg, id);
    F(nke_kern_event_msg, event_code); struct_end();
    S(nke_kev_exec_chunk); F(nke_kev_exec_chunk, exec_id); F(nke_kev_exec_chunk, pid); F(nke_kev_exec_chunk, ppid);
    F(nke_kev_exec_chunk, uid); F(nke_kev_exec_chunk, total_len); F(nke_kev_exec_chunk, offset);
    F(nke_kev_exec_chunk, chunk_index); F(nke_kev_exec_chunk, chunk_count); F(nke_kev_exec_chunk, flags);
    struct_end();
    S(nke_emu_req); F(nke_emu_req, magic); F(nke_emu_req, selector); F(nke_emu_req, seq); F(nke_emu_req, len);
    struct_end();
    S(nke_emu_reply); F(nke_emu_reply, magic); F(nke_emu_reply, status); F(nke_emu_reply, seq);
    F(nke_emu_reply, len); struct_end();
    S(nke_emu_kev_ctl); F(nke_emu_kev_ctl, magic); F(nke_emu_kev_ctl, op); F(nke_emu_kev_ctl, status);
    F(nke_emu_kev_ctl, vendor_code); F(nke_emu_kev_ctl, kev_class); F(nke_emu_kev_ctl, kev_subclass);
    F(nke_emu_kev_ctl, msg_limit); F(nke_emu_kev_ctl, _pad0); A(nke_emu_kev_ctl, vendor_string); struct_end();
    S(nke_emu_refusal); F(nke_emu_refusal, peer_uid); F(nke_emu_refusal, filter_uid); struct_end();

    printf("\n  ],\n  \"constants\": {");

    C(NKE_ABI_VERSION); CS(NKE_BUNDLE_ID); CS(NKE_SERVICE_CLASS); CS(NKE_KEV_VENDOR);
    C(NKE_BUFFER_COUNT); C(NKE_BUFFER_SIZE); C(NKE_CHUNK_MAX_BUFFERS); C(NKE_CHUNK_MAX_BYTES); C(NKE_BUF_NONE);
    C(NKE_QUEUE_DATA_SIZE); C(NKE_MEM_QUEUE); C(NKE_MEM_BUFFER_POOL); C(NKE_MEM_BUFFER_BASE);
    C(NKE_DQ_ENTRY_HEADER_SIZE); C(NKE_DQ_MEMORY_HEADER_SIZE); C(NKE_QUEUE_MAP_SIZE);
    C(NKE_AF_INET); C(NKE_AF_INET6); C(NKE_PROTO_TCP); C(NKE_PROTO_UDP); C(NKE_COMM_LEN);
    C(NKE_DIR_IN); C(NKE_DIR_OUT);
    C(NKE_SEL_OPEN); C(NKE_SEL_RESPOND); C(NKE_SEL_PUT_DATA); C(NKE_SEL_SET_CAPTURE); C(NKE_SEL_GET_STATE);
    C(NKE_SEL_COUNT); C(NKE_OPEN_F_NONE);
    C(NKE_NT_ATTACH); C(NKE_NT_DETACH); C(NKE_NT_CONNECT_IN); C(NKE_NT_CONNECT_OUT); C(NKE_NT_BOUND);
    C(NKE_NT_LISTEN); C(NKE_NT_EVENT); C(NKE_NT_DATA); C(NKE_NT_CHUNK_RELEASED); C(NKE_NT_STATE); C(NKE_NT_OPTION);
    C(NKE_NT_OWNER); C(NKE_NT_DATA_GAP); C(NKE_GAP_NO_BUFFER); C(NKE_GAP_QUEUE_FULL);
    C(NKE_EV_CONNECTING); C(NKE_EV_CONNECTED); C(NKE_EV_DISCONNECTING); C(NKE_EV_DISCONNECTED);
    C(NKE_EV_FLUSH_READ); C(NKE_EV_SHUTDOWN); C(NKE_EV_CANTRECVMORE); C(NKE_EV_CANTSENDMORE); C(NKE_EV_CLOSING);
    C(NKE_EV_BOUND);
    C(NKE_DATA_F_HELD); C(NKE_DATA_F_DATAGRAM); C(NKE_DATA_F_OOB); C(NKE_DATA_F_HAS_ADDR);
    C(NKE_RELEASE_TIMEOUT); C(NKE_RELEASE_CLIENT_GONE); C(NKE_RELEASE_SOCKET_GONE); C(NKE_RELEASE_INJECT_FAIL);
    C(NKE_RELEASE_BUDGET); C(NKE_RELEASE_SOCKET_CLOSING);
    C(NKE_STATE_F_CLIENT); C(NKE_STATE_F_CAPTURE); C(NKE_NT_MAX_SIZE); C(NKE_KEPT_BYTES_MAX);
    C(NKE_ACT_ALLOW); C(NKE_ACT_ALLOW_MODIFIED); C(NKE_ACT_DROP); C(NKE_ACT_EXTEND); C(NKE_HOLD_TOTAL_MAX_MS);
    C(NKE_RESPONSE_MAX_VERDICTS); C(NKE_RESPONSE_MAX_RELEASES); C(NKE_RESPONSE_MAX_SIZE);
    C(NKE_PUT_DATA_MAX_PIECE); C(NKE_MODIFIED_MAX_LEN);
    C(NKE_CAPTURE_NOTHING); C(NKE_CAPTURE_ALL); C(NKE_CAPTURE_RULES);
    C(NKE_RULE_PASS); C(NKE_RULE_REPORT); C(NKE_RULE_HOLD); C(NKE_RULE_DEFAULT);
    C(NKE_MATCH_PID); C(NKE_MATCH_COMM); C(NKE_MATCH_DIRECTION); C(NKE_MATCH_PROTOCOL); C(NKE_MATCH_LOCAL_PORT);
    C(NKE_MATCH_REMOTE_PORT); C(NKE_MATCH_LOCAL_ADDR); C(NKE_MATCH_REMOTE_ADDR); C(NKE_MATCH_FAMILY);
    C(NKE_MATCH_ALL_FIELDS);
    C(NKE_MAX_RULES); C(NKE_HOLD_TIMEOUT_DEFAULT_MS); C(NKE_HOLD_TIMEOUT_MAX_MS);
    C(NKE_OK); C(NKE_ERR_VERSION); C(NKE_ERR_SIZE); C(NKE_ERR_COUNT); C(NKE_ERR_FLAGS); C(NKE_ERR_RESERVED);
    C(NKE_ERR_ACTION); C(NKE_ERR_SOCK); C(NKE_ERR_NOT_HELD); C(NKE_ERR_DUP_VERDICT); C(NKE_ERR_MODIFIED_LEN);
    C(NKE_ERR_BUF_RANGE); C(NKE_ERR_BUF_DUP); C(NKE_ERR_BUF_DOUBLE); C(NKE_ERR_BUF_FOREIGN);
    C(NKE_ERR_PUT_OFFSET); C(NKE_ERR_PUT_LEN); C(NKE_ERR_UNKNOWN_CHUNK); C(NKE_ERR_MODE); C(NKE_ERR_RULE);
    C(NKE_ERR_NOT_PERMITTED); C(NKE_ERR_BUSY); C(NKE_ERR_SELECTOR); C(NKE_ERR_NO_MEMORY); C(NKE_ERR_NOT_OPEN);
    C(NKE_ERR_HOLD_MS);
    C(NKE_ERR__COUNT);
    C(NKE_KEV_HEADER_SIZE); C(NKE_KEV_CLASS); C(NKE_KEV_SUBCLASS_EXEC); C(NKE_KEV_EVENT_EXEC);
    C(NKE_KEV_MSG_LIMIT_X86_64); C(NKE_KEV_MSG_LIMIT_ARM64); C(NKE_PATH_MAX); C(NKE_KEV_MAX_CHUNKS);
    C(NKE_EXEC_F_SPAWNER_CONTEXT); C(NKE_EXEC_F_FROM_SHIM); C(NKE_EXEC_F_TRUNCATED); C(NKE_KEV_EXEC_CHUNK_HEADER_SIZE);
    CS(NKE_EMU_DIR_ENV); CS(NKE_EMU_CTL_SOCK); CS(NKE_EMU_KEV_SOCK); CS(NKE_EMU_SHIM_SOCK); CS(NKE_EMU_LOCK_FILE); CS(NKE_EMU_LOG_FILE); C(NKE_EMU_LOG_MAX);
    C(NKE_EMU_MAGIC_REQ); C(NKE_EMU_MAGIC_REPLY); C(NKE_EMU_MAX_REQ);
    C(NKE_EMU_KEV_GET_VENDOR); C(NKE_EMU_KEV_SET_FILTER); C(NKE_EMU_KEV_ANY); C(NKE_EMU_KEV_OK);
    C(NKE_EMU_KEV_EPERM); C(NKE_EMU_KEV_ENOENT); C(NKE_EMU_KEV_EINVAL); C(NKE_EMU_KEV_VENDOR_LEN);

    printf("\n  }\n}\n");
    return fflush(stdout) == 0 ? 0 : 1;
}
