/* Feature negotiation: the device-side check at FEATURES_OK (virtio 1.2,
 * section 3.1.1 step 5 and section 2.2). */
#include "vmrun/virtio.h"

#include <errno.h>
#include <stdio.h>

#include "vmrun/log.h"

/* The name of a device-independent feature bit, for messages; "" for the
 * others (device-specific bits are named by number only). */
static const char *virtio_feature_name(unsigned bit)
{
	switch (bit) {
	case VIRTIO_F_INDIRECT_DESC:
		return " (INDIRECT_DESC)";
	case VIRTIO_F_EVENT_IDX:
		return " (EVENT_IDX)";
	case VIRTIO_F_VERSION_1:
		return " (VERSION_1)";
	case VIRTIO_F_ACCESS_PLATFORM:
		return " (ACCESS_PLATFORM)";
	default:
		return "";
	}
}

/* Format into @why when the caller gave room for it. */
#define VF_FAIL(why, whylen, ...) \
	((why) && (whylen) ? errmsg(-EINVAL, why, whylen, __VA_ARGS__) : -EINVAL)

int virtio_features_check(uint64_t offered, uint64_t accepted,
			  const struct virtio_feature_dep *deps, size_t n_deps,
			  char *why, size_t whylen)
{
	uint64_t extra = accepted & ~offered;

	/* A driver MUST NOT accept a feature the device did not offer
	 * (section 2.2.1); name the lowest such bit. */
	if (extra) {
		unsigned bit = (unsigned)__builtin_ctzll(extra);

		return VF_FAIL(why, whylen, "driver accepted feature bit %u%s, which was not "
			       "offered", bit, virtio_feature_name(bit));
	}
	/* vmrun's devices are modern only: a legacy driver (no VERSION_1)
	 * would expect guest-endian rings and the legacy layout. */
	if (!(accepted & VIRTIO_BIT(VIRTIO_F_VERSION_1)))
		return VF_FAIL(why, whylen, "driver did not accept feature bit %u (VERSION_1): "
			       "legacy drivers are not supported", VIRTIO_F_VERSION_1);
	for (size_t i = 0; i < n_deps; i++) {
		unsigned bit = deps[i].bit, needs = deps[i].needs;

		/* A table naming a bit past 63 is a device-model bug; refuse
		 * rather than shift out of range. */
		if (bit > 63 || needs > 63)
			return VF_FAIL(why, whylen, "feature dependency %zu names bit %u needing "
				       "bit %u, outside 0..63", i, bit, needs);
		if ((accepted & VIRTIO_BIT(bit)) && !(accepted & VIRTIO_BIT(needs)))
			return VF_FAIL(why, whylen, "feature bit %u%s needs feature bit %u%s, "
				       "which the driver did not accept", bit,
				       virtio_feature_name(bit), needs, virtio_feature_name(needs));
	}
	return 0;
}
