// Entry point of the NKE addon: FilterClient (the user client of the filter)
// and KevSocket (the kernel-event socket), plus the ABI constants JS needs to
// check it talks to the addon built from the same header.
#include <napi.h>

#include "filter_client.h"
#include "kev_socket.h"
#include "transport.h"

namespace nke {

const char *ErrorName(uint32_t err) {
  static const char *const names[] = {
      "NKE_OK",           "NKE_ERR_VERSION",     "NKE_ERR_SIZE",         "NKE_ERR_COUNT",
      "NKE_ERR_FLAGS",    "NKE_ERR_RESERVED",    "NKE_ERR_ACTION",       "NKE_ERR_SOCK",
      "NKE_ERR_NOT_HELD", "NKE_ERR_DUP_VERDICT", "NKE_ERR_MODIFIED_LEN", "NKE_ERR_BUF_RANGE",
      "NKE_ERR_BUF_DUP",  "NKE_ERR_BUF_DOUBLE",  "NKE_ERR_BUF_FOREIGN",  "NKE_ERR_PUT_OFFSET",
      "NKE_ERR_PUT_LEN",  "NKE_ERR_UNKNOWN_CHUNK", "NKE_ERR_MODE",       "NKE_ERR_RULE",
      "NKE_ERR_NOT_PERMITTED", "NKE_ERR_BUSY",   "NKE_ERR_SELECTOR",     "NKE_ERR_NO_MEMORY",
      "NKE_ERR_NOT_OPEN", "NKE_ERR_HOLD_MS"};
  static_assert(sizeof(names) / sizeof(names[0]) == NKE_ERR__COUNT, "one name per nke_error");
  return err < NKE_ERR__COUNT ? names[err] : "NKE_ERR_UNKNOWN";
}

const char *ErrorMeaning(uint32_t err) {
  static const char *const meanings[] = {
      "ok",
      "ABI version differs",
      "message size inconsistent with its counts",
      "too many verdicts, releases or rules",
      "unknown flag bits",
      "a padding field is not zero",
      "unknown verdict or rule action",
      "socket id does not match the chunk",
      "verdict for a chunk that was only reported",
      "two verdicts for one chunk",
      "modified length differs from the staged data",
      "buffer index out of range",
      "buffer listed twice in one response",
      "buffer of this chunk already released",
      "buffer does not belong to the chunk named",
      "put-data piece out of order",
      "put-data beyond its total length or limits",
      "no such held chunk",
      "unknown capture mode",
      "malformed rule",
      "client is not an administrator or is another user",
      "another client is connected",
      "unknown method",
      "out of memory",
      "method before a successful open",
      "extend hold_ms is 0 or above the total hold cap"};
  static_assert(sizeof(meanings) / sizeof(meanings[0]) == NKE_ERR__COUNT, "one per nke_error");
  return err < NKE_ERR__COUNT ? meanings[err] : "unknown error";
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("FilterClient", FilterClient::Init(env));
  exports.Set("KevSocket", KevSocket::Init(env));
  exports.Set("abiVersion", Napi::Number::New(env, NKE_ABI_VERSION));
  exports.Set("kevVendor", Napi::String::New(env, NKE_KEV_VENDOR));
  exports.Set("platform", Napi::String::New(env,
#ifdef __APPLE__
                                            "iokit"
#else
                                            "emulator"
#endif
                                            ));
  return exports;
}

}  // namespace nke

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  return nke::InitModule(env, exports);
}

NODE_API_MODULE(nke_addon, InitAddon)
