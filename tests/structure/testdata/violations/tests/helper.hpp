// A test helper.
#pragma once
