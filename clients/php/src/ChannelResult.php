<?php

declare(strict_types=1);

namespace Apnsd;

/**
 * apnsd's answer to a broadcast channel op (channelCreate, channelGet,
 * channelList, channelDelete). Besides what a Result says (isOk(); Apple's
 * getStatus()/getReason() when Apple refused; getError()/getMessage() when
 * apnsd did), it carries the channel's id and settings.
 */
final class ChannelResult extends Result
{
    /** The channel created (channelCreate) or looked up (channelGet). */
    public function getChannelId(): ?string
    {
        return self::stringOrNull($this->getRaw()['channel_id'] ?? null);
    }

    /** Apple's message storage policy, "none" or "latest" (channelGet). */
    public function getStorage(): ?string
    {
        return self::stringOrNull($this->getRaw()['storage'] ?? null);
    }

    /** The channel's push type (channelGet). */
    public function getPushType(): ?string
    {
        return self::stringOrNull($this->getRaw()['push_type'] ?? null);
    }

    /**
     * The channel ids (channelList); [] for the other ops.
     *
     * @return list<string>
     */
    public function getChannels(): array
    {
        $channels = $this->getRaw()['channels'] ?? null;
        if (!is_array($channels)) {
            return [];
        }

        return array_values(array_filter($channels, 'is_string'));
    }

    public function describe(): string
    {
        if ($this->isOk() && $this->getChannelId() !== null) {
            return 'channel ' . $this->getChannelId();
        }
        if ($this->isOk() && array_key_exists('channels', $this->getRaw())) {
            return count($this->getChannels()) . ' channel(s)';
        }

        return parent::describe();
    }
}
