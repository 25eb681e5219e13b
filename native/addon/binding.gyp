{
  # The user side of the NKE ABI. Compiles kext/core's queue consumer (nke_dq.c)
  # and kev reassembler (nke_kev.c) so the addon reads the kext's queue and the
  # emulator's with the very code the producer side is tested against.
  "targets": [
    {
      "target_name": "nke_addon",
      "sources": [
        "src/addon.cpp",
        "src/filter_client.cpp",
        "src/capture_spill.cpp",
        "src/kev_socket.cpp",
        "../../kext/core/nke_dq.c",
        "../../kext/core/nke_kev.c"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "../../kext/include",
        "../../kext/core",
        "../emu/include"
      ],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags": ["-Wall", "-Wextra"],
      "cflags_c": ["-std=c11"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-fexceptions"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "conditions": [
        ["OS=='linux'", {
          # nke_rundir.c: the emulator's runtime directory and its trust
          # checks, the same code nke-emud and the shim run.
          "sources": ["src/transport_linux.cpp", "../emu/src/nke_rundir.c"]
        }],
        ["OS=='mac'", {
          "sources": ["src/transport_macos.cpp"],
          "libraries": ["-framework IOKit", "-framework CoreFoundation"],
          "xcode_settings": {
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "MACOSX_DEPLOYMENT_TARGET": "10.13"
          }
        }]
      ]
    }
  ]
}
