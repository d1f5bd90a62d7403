# Evaluates a Vagrantfile without Vagrant and prints what it configures as
# JSON: the box, and each provisioner's name, options and inline script (with
# Ruby's interpolation done), so tests/tests/manifests/vagrant.rs can check
# the provisioning scripts with `bash -n`.
#
#   ruby tests/e2e/vagrantfile_dump.rb Vagrantfile
require "json"

# Records every setting; nested blocks (providers) are recorded too.
class Recorder
  attr_reader :settings, :provisioners, :synced_folders

  def initialize
    @settings = {}
    @provisioners = []
    @synced_folders = []
  end

  def provision(name, **opts)
    @provisioners << { "name" => name.to_s }.merge(opts.transform_keys(&:to_s))
  end

  def synced_folder(src, dst, **opts)
    @synced_folders << { "src" => src, "dst" => dst }.merge(opts.transform_keys(&:to_s))
  end

  def provider(name)
    sub = Recorder.new
    yield sub if block_given?
    @settings["provider.#{name}"] = sub.settings
  end

  def method_missing(name, *args)
    key = name.to_s
    if key.end_with?("=")
      @settings[key.chomp("=")] = args.first
    else
      @settings[key] ||= Recorder.new
    end
  end

  def respond_to_missing?(*)
    true
  end

  def to_json(*a)
    @settings.to_json(*a)
  end
end

module Vagrant
  @config = Recorder.new
  class << self
    attr_reader :config

    def configure(_version)
      yield @config
    end

    def require_version(*); end
  end
end

path = ARGV.fetch(0)
eval(File.read(path), TOPLEVEL_BINDING, path) # rubocop:disable Security/Eval
vm = Vagrant.config.settings.fetch("vm")
puts JSON.pretty_generate(
  "box" => vm.settings["box"],
  "providers" => vm.settings.select { |k, _| k.start_with?("provider.") },
  "synced_folders" => vm.synced_folders,
  "provisioners" => vm.provisioners,
)
