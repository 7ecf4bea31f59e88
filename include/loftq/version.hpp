/// @file version.hpp
/// Version of loftq-cpp. CMake reads the project version from these macros.
#pragma once

/// Major version: incompatible API changes.
#define LOFTQ_VERSION_MAJOR 0
/// Minor version: compatible additions.
#define LOFTQ_VERSION_MINOR 1
/// Patch version: fixes.
#define LOFTQ_VERSION_PATCH 0
/// The version as one integer, major * 10000 + minor * 100 + patch.
#define LOFTQ_VERSION (LOFTQ_VERSION_MAJOR * 10000 + LOFTQ_VERSION_MINOR * 100 + LOFTQ_VERSION_PATCH)
